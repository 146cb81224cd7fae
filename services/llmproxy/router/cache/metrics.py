"""Prometheus metrics of the response cache (labels: model names from config, never prompts)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CACHE_REQUESTS = Counter(
    "llmproxy_cache_requests_total", "Cache outcomes of requests.", ["model", "result"]
)
CACHE_BYTES_SERVED = Counter(
    "llmproxy_cache_served_bytes_total", "Bytes answered from the cache.", ["model"]
)
CACHE_SAVED_TOKENS = Counter(
    "llmproxy_cache_saved_tokens_total", "Provider tokens cache hits saved.", ["model"]
)
CACHE_SAVED_USD = Counter(
    "llmproxy_cache_saved_usd_total", "Provider spend cache hits saved, in USD.", ["model"]
)
CACHE_HIT_RATIO = Gauge(
    "llmproxy_cache_hit_ratio", "Hits over lookups since this router started.", ["model"]
)
CACHE_ERRORS = Counter(
    "llmproxy_cache_errors_total", "Redis errors the cache absorbed.", ["operation"]
)
