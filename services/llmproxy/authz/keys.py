"""API keys and control tokens: their format, how they are made, and the keyed hash that is all
Redis ever holds.

An API key reads `sk-llmp-<key_id>-<secret>`, a control token `ct-llmp-<token_id>-<secret>`.
The id is public (logs, headers, the admin API) and lets a check find the record with one
lookup; the secret part is 256 random bits. Redis stores only HMAC-SHA256(server secret, whole
key), so a copy of Redis alone cannot be turned into working keys or tokens, and checks compare
digests in constant time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from llmproxy.authz.errors import SecretConfigError

KEY_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
MAX_KEY_LENGTH = 128
MIN_SERVER_SECRET_LENGTH = 32


@dataclass(frozen=True)
class SecretFormat:
    """One kind of secret: `<prefix><16 hex id>-<43 URL-safe characters>`."""

    prefix: str

    def new_id(self) -> str:
        """A random id: 64 bits, so ids never need coordination."""
        return secrets.token_hex(8)

    def new(self, secret_id: str) -> str:
        """A new secret for secret_id."""
        return f"{self.prefix}{secret_id}-{secrets.token_urlsafe(32)}"

    def shown(self, secret_id: str) -> str:
        """What logs and the admin API show: enough to recognise it, never to use it."""
        return f"{self.prefix}{secret_id}"

    def id_of(self, text: str) -> str | None:
        """The id inside a well-formed secret of this kind, or None."""
        if len(text) > MAX_KEY_LENGTH or not text.startswith(self.prefix):
            return None
        match = _SECRET_PATTERN.fullmatch(text, len(self.prefix))
        return match.group(1) if match else None


_SECRET_PATTERN = re.compile(r"([0-9a-f]{16})-[A-Za-z0-9_-]{43}")

API_KEY = SecretFormat("sk-llmp-")
CONTROL_TOKEN = SecretFormat("ct-llmp-")
KEY_PREFIX = API_KEY.prefix
CONTROL_TOKEN_PREFIX = CONTROL_TOKEN.prefix


def new_key_id() -> str:
    """A random key id."""
    return API_KEY.new_id()


def new_key(key_id: str) -> str:
    """A new secret key for key_id."""
    return API_KEY.new(key_id)


def key_prefix(key_id: str) -> str:
    """What logs and the admin API show of a key."""
    return API_KEY.shown(key_id)


def key_id_of(key: str) -> str | None:
    """The key id inside a well-formed key, or None when key is not one of ours."""
    return API_KEY.id_of(key)


class SecretMatch(enum.Enum):
    """Which of a record's secrets a presented one is."""

    NONE = "none"
    CURRENT = "current"
    PREVIOUS = "previous"  # the one before the last rotation, within its grace


class KeyHasher:
    """HMAC-SHA256 of keys and control tokens under the server secret."""

    def __init__(self, server_secret: bytes) -> None:
        if len(server_secret) < MIN_SERVER_SECRET_LENGTH:
            raise SecretConfigError(
                f"the HMAC secret must be at least {MIN_SERVER_SECRET_LENGTH} bytes long"
            )
        self._secret = server_secret

    def digest(self, key: str) -> str:
        """The hex digest stored for key."""
        return hmac.digest(self._secret, key.encode(), hashlib.sha256).hex()

    def matches(self, key: str, digest: str) -> bool:
        """Whether key hashes to digest, compared in constant time."""
        return hmac.compare_digest(self.digest(key), digest)

    def match(
        self,
        key: str,
        digest: str,
        previous_digest: str | None,
        previous_valid_until: float | None,
        now: float,
    ) -> SecretMatch:
        """Whether key is the current secret, or the previous one within its grace.

        With a previous secret both digests are compared every time, so timing does not tell
        which one matched.
        """
        current = self.matches(key, digest)
        if previous_digest is None:
            return SecretMatch.CURRENT if current else SecretMatch.NONE
        previous = self.matches(key, previous_digest)
        in_grace = previous_valid_until is not None and now < previous_valid_until
        if current:
            return SecretMatch.CURRENT
        return SecretMatch.PREVIOUS if previous and in_grace else SecretMatch.NONE


def hasher_from_env(environ: Mapping[str, str], variable: str) -> KeyHasher:
    """The hasher keyed with the secret in environ[variable], or SecretConfigError."""
    value = environ.get(variable, "")
    if not value:
        raise SecretConfigError(
            f"${variable} is not set: the authz service needs a secret of at least "
            f"{MIN_SERVER_SECRET_LENGTH} characters to hash API keys "
            '(e.g. python -c "import secrets; print(secrets.token_urlsafe(32))")'
        )
    try:
        return KeyHasher(value.encode())
    except SecretConfigError as exc:
        raise SecretConfigError(f"${variable}: {exc}") from exc
