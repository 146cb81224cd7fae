"""Whether a request is looked up in the cache, stored in it, and for how long."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmproxy.router.errors import InvalidRequestError
from llmproxy.router.settings import CacheSettings

CACHE_HEADER = "x-llmproxy-cache"  # "force": cache this request even if it is sampled
TTL_HEADER = "x-llmproxy-cache-ttl"  # seconds this answer may stay cached
TAGS_HEADER = "x-llmproxy-cache-tags"  # comma-separated tags to invalidate it by


@dataclass(frozen=True)
class CacheDecision:
    """What the cache does for one request; reason explains a bypass."""

    lookup: bool
    store: bool
    ttl_s: int
    tags: tuple[str, ...] = field(default=())
    reason: str = ""


def _deterministic(body: Mapping[str, Any], kind: str) -> bool:
    # Chat and legacy completions sample unless temperature is 0 (both default to 1).
    if kind == "embeddings":
        return True
    temperature = body.get("temperature", 1)
    return isinstance(temperature, int | float) and temperature == 0 and body.get("n", 1) == 1


def _cache_control(headers: Mapping[str, str]) -> set[str]:
    value = headers.get("cache-control", "")
    return {part.strip().lower() for part in value.split(",") if part.strip()}


def _ttl(headers: Mapping[str, str], default_s: int, max_s: int) -> int:
    raw = headers.get(TTL_HEADER)
    if raw is None:
        return default_s
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidRequestError(
            f"{TTL_HEADER} must be a whole number of seconds of at least 1, got {raw!r}."
        )
    return min(int(raw), max_s)


def _tags(headers: Mapping[str, str]) -> tuple[str, ...]:
    raw = headers.get(TAGS_HEADER, "")
    tags = tuple(sorted({t.strip() for t in raw.split(",") if t.strip()}))
    for tag in tags:
        if len(tag) > 64 or not tag.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise InvalidRequestError(
                f"{TAGS_HEADER}: tag {tag!r} must be 1-64 letters, digits, '-', '_' or '.'."
            )
    return tags


def decide(
    kind: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    settings: CacheSettings,
    model_ttl_s: int | None,
) -> CacheDecision:
    """Apply Cache-Control, the opt-in header and determinism to one request."""
    ttl = _ttl(headers, model_ttl_s or settings.default_ttl_s, settings.max_ttl_s)
    tags = _tags(headers)
    if not settings.enabled:
        return CacheDecision(False, False, ttl, tags, "cache disabled")
    control = _cache_control(headers)
    forced = headers.get(CACHE_HEADER, "").lower() == "force"
    if "no-store" in control:
        return CacheDecision(False, False, ttl, tags, "no-store")
    if not (forced or settings.cache_nondeterministic or _deterministic(body, kind)):
        return CacheDecision(False, False, ttl, tags, "sampled (temperature not 0)")
    if "no-cache" in control:
        return CacheDecision(False, True, ttl, tags, "no-cache")
    return CacheDecision(True, True, ttl, tags)
