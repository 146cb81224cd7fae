"""What the service stores: API key and control token records, and their JSON form in Redis.

Audit entries are common.audit's: every service writes them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from llmproxy.authz.keys import KeyHasher, SecretMatch
from llmproxy.common.access import Role

ALL_MODELS = ("*",)


@dataclass(frozen=True)
class KeyRecord:
    """One API key's metadata and the keyed hash of its secret. Times are Unix seconds."""

    key_id: str
    key_hash: str
    tenant: str
    user: str
    created_at: float
    updated_at: float
    name: str = ""
    allowed_models: tuple[str, ...] = ALL_MODELS
    tier: str = "default"
    daily_budget_usd: float = 0.0
    monthly_budget_usd: float = 0.0
    expires_at: float | None = None
    revoked: bool = False
    revoked_at: float | None = None
    revoke_reason: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    rotated_at: float | None = None
    # After a rotation the old secret works until previous_valid_until (a grace period).
    previous_key_hash: str | None = None
    previous_valid_until: float | None = None
    # Incremented by every write; a write succeeds only over the version it read.
    version: int = 1

    def allows_model(self, model: str) -> bool:
        """Whether model matches one of the allowed patterns (shell wildcards, case-sensitive)."""
        return any(fnmatchcase(model, pattern) for pattern in self.allowed_models)

    def secret_matches(self, hasher: KeyHasher, key: str, now: float) -> bool:
        """Whether key is this record's current secret, or its previous one within the grace."""
        found = hasher.match(
            key, self.key_hash, self.previous_key_hash, self.previous_valid_until, now
        )
        return found is not SecretMatch.NONE

    def expired(self, now: float) -> bool:
        """Whether the expiry time has passed."""
        return self.expires_at is not None and now >= self.expires_at

    def changed(self, now: float, **changes: Any) -> KeyRecord:
        """A copy with changes applied, the next version, updated now."""
        return dataclasses.replace(self, **changes, updated_at=now, version=self.version + 1)

    def to_json(self) -> str:
        """The record as stored in Redis."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def as_atoms(self) -> Atoms:
        """The record as a tuple of strings, numbers and tuples: the garbage collector stops
        tracking such a tuple once a collection has seen it (see authz.cache)."""
        values = [getattr(self, name) for name in _FIELD_NAMES]
        values[_LABELS] = tuple(self.labels.items())
        return tuple(values)

    @classmethod
    def from_atoms(cls, atoms: Atoms) -> KeyRecord:
        """The record as_atoms made."""
        values = list(atoms)
        values[_LABELS] = dict(values[_LABELS])
        return cls(*values)

    @classmethod
    def from_json(cls, text: str | bytes) -> KeyRecord:
        """The record read back from Redis; fields added later take their defaults."""
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        data = {name: value for name, value in data.items() if name in known}
        data["allowed_models"] = tuple(data.get("allowed_models", ALL_MODELS))
        return cls(**data)


Atoms = tuple[Any, ...]
_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(KeyRecord))
_LABELS = _FIELD_NAMES.index("labels")


@dataclass(frozen=True)
class ControlTokenRecord:
    """One control token's metadata and the keyed hash of its secret. Times are Unix seconds."""

    token_id: str
    token_hash: str
    name: str
    role: str  # a common.access.Role's label: viewer, operator or admin
    created_at: float
    expires_at: float | None = None
    revoked: bool = False
    revoked_at: float | None = None
    revoke_reason: str = ""
    rotated_at: float | None = None
    # After a rotation the old secret works until previous_valid_until (a grace period).
    previous_hash: str | None = None
    previous_valid_until: float | None = None
    # Incremented by every write; a write succeeds only over the version it read.
    version: int = 1

    @property
    def access_role(self) -> Role:
        """The role as common.access knows it."""
        return Role.parse(self.role)

    def secret_match(self, hasher: KeyHasher, token: str, now: float) -> SecretMatch:
        """Whether token is the current secret, or the previous one within the grace."""
        return hasher.match(
            token, self.token_hash, self.previous_hash, self.previous_valid_until, now
        )

    def expired(self, now: float) -> bool:
        """Whether the expiry time has passed."""
        return self.expires_at is not None and now >= self.expires_at

    def changed(self, **changes: Any) -> ControlTokenRecord:
        """A copy with changes applied, the next version."""
        return dataclasses.replace(self, **changes, version=self.version + 1)

    def to_json(self) -> str:
        """The record as stored in Redis."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ControlTokenRecord:
        """The record read back from Redis; fields added later take their defaults."""
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})
