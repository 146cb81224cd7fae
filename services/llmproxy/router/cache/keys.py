"""Cache keys: the same request, whatever its JSON key order or whitespace, hashes the same."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Fields that change nothing in the provider's answer (stream_options only adds a usage chunk,
# which cached streams always carry and each client gets filtered to what it asked for).
IGNORED_FIELDS = frozenset({"user", "stream_options", "metadata", "store"})


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 0 and 0.0 are the same temperature
    return value


def normalized(kind: str, body: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
    """The parts of a request that decide its answer, with numbers in one form, and the tenant
    whose entry it is (None: an entry every tenant shares)."""
    kept = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    scope = {} if tenant is None else {"tenant": tenant}
    return {"kind": kind, "request": _canonical(kept), **scope}


def cache_key(kind: str, body: dict[str, Any], tenant: str | None = None) -> str:
    """A hex SHA-256 of the normalized request; kind separates chat, legacy completions and
    embeddings, and the tenant (cache.scope tenant) one tenant's entries from another's."""
    canonical = json.dumps(normalized(kind, body, tenant), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
