"""What the service stores: key records and audit entries, and their JSON form in Redis."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from llmproxy.authz.keys import KeyHasher

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
        """Whether key is this record's current secret, or its previous one within the grace.

        With a previous secret both digests are compared every time, so timing does not tell
        which one matched.
        """
        current = hasher.matches(key, self.key_hash)
        if self.previous_key_hash is None:
            return current
        previous = hasher.matches(key, self.previous_key_hash)
        in_grace = self.previous_valid_until is not None and now < self.previous_valid_until
        return current or (previous and in_grace)

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
class AuditEntry:
    """One admin call, as the audit trail keeps it."""

    time: float
    method: str
    actor: str
    peer: str
    outcome: str
    key_id: str = ""
    tenant: str = ""
    detail: str = ""
    # Assigned by the store (a Redis stream id); empty until stored.
    id: str = ""

    def fields(self) -> dict[str, str]:
        """The entry as flat string fields, without its id."""
        values = dataclasses.asdict(self)
        del values["id"]
        return {name: str(value) for name, value in values.items()}

    @classmethod
    def from_fields(cls, entry_id: str, values: dict[str, str]) -> AuditEntry:
        """An entry read back from the store."""
        known = {f.name for f in dataclasses.fields(cls)} - {"id", "time"}
        kept = {name: value for name, value in values.items() if name in known}
        return cls(id=entry_id, time=float(values.get("time", 0)), **kept)
