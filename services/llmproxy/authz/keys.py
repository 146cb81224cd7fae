"""API keys: their format, how they are made, and the keyed hash that is all Redis ever holds.

A key reads `sk-llmp-<key_id>-<secret>`. The key id is public (logs, headers, the admin API)
and lets a check find the key's record with one lookup; the secret part is 256 random bits.
Redis stores only HMAC-SHA256(server secret, whole key), so a copy of Redis alone cannot be
turned into working keys, and checks compare digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping

from llmproxy.authz.errors import SecretConfigError

KEY_PREFIX = "sk-llmp-"
KEY_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
_KEY_PATTERN = re.compile(r"^sk-llmp-([0-9a-f]{16})-[A-Za-z0-9_-]{43}$")
MAX_KEY_LENGTH = 128
MIN_SERVER_SECRET_LENGTH = 32


def new_key_id() -> str:
    """A random key id: 64 bits, so ids never need coordination."""
    return secrets.token_hex(8)


def new_key(key_id: str) -> str:
    """A new secret key for key_id."""
    return f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(32)}"


def key_prefix(key_id: str) -> str:
    """What logs and the admin API show of a key: enough to recognise it, never to use it."""
    return f"{KEY_PREFIX}{key_id}"


def key_id_of(key: str) -> str | None:
    """The key id inside a well-formed key, or None when key is not one of ours."""
    if len(key) > MAX_KEY_LENGTH:
        return None
    match = _KEY_PATTERN.match(key)
    return match.group(1) if match else None


class KeyHasher:
    """HMAC-SHA256 of keys under the server secret."""

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
