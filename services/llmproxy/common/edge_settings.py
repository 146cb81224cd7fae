"""The `edge` section of the configuration: the limits Envoy enforces on its own, before authz.

The first tier of rate limiting runs in Envoy (token buckets, no Python, no Redis) ahead of
ext_authz, so that a flood is refused at C++ cost instead of costing an authz check each; the
exact tier (ratelimit service, Redis) keeps the per-tenant, per-key and per-token limits. The
same section bounds what a client may make Envoy itself hold: connections, heap, streams, header
sizes and idle time.
"""

from __future__ import annotations

import math
from fractions import Fraction

from pydantic import Field

from llmproxy.common.settings import StrictModel

# The longest refill period a rate may imply (one token every 1000 s): Envoy's bucket takes the
# rate as whole tokens per whole seconds, with the seconds at most this.
MAX_REFILL_PERIOD_S = 1000


class TokenBucket(StrictModel):
    """A token bucket: `burst` requests at once, then `rate_per_s` on average."""

    rate_per_s: float = Field(
        ge=1 / MAX_REFILL_PERIOD_S,
        le=1_000_000,
        description="Tokens added per second, continuously; fractions are allowed (0.5 is one "
        "every 2 s, 0.001 the smallest: one every 1000 s).",
    )
    burst: int = Field(
        ge=1,
        le=100_000_000,
        description="Size of the bucket: how many requests pass at once after a quiet spell.",
    )

    def refill(self) -> tuple[int, int]:
        """The rate as (tokens, seconds) in whole numbers, as Envoy's TokenBucket takes it."""
        rate = Fraction(self.rate_per_s).limit_denominator(MAX_REFILL_PERIOD_S)
        return rate.numerator, rate.denominator

    @property
    def retry_after_s(self) -> int:
        """Seconds until a refused client has a token again (at least 1)."""
        tokens, seconds = self.refill()
        return max(1, math.ceil(seconds / tokens))


class EdgeSettings(StrictModel):
    """Limits Envoy enforces itself on the client listener, ahead of authorization.

    The defaults are generous (above what the gateway's Python services can serve on one
    machine) so that no client behind a shared address is refused by surprise; docs/ratelimit.md
    shows values for production.
    """

    xff_num_trusted_hops: int = Field(
        0,
        ge=0,
        le=10,
        description="Proxies in front of Envoy whose X-Forwarded-For entries are trusted: the "
        "client address is the entry this many hops from the right. 0 ignores the header (the "
        "peer address counts, and X-Forwarded-For cannot be spoofed); behind one load balancer, "
        "1. A malformed header counts as the peer address.",
    )
    per_client_ip: TokenBucket = Field(
        TokenBucket(rate_per_s=2000, burst=4000),
        description="Requests per client address, one bucket each.",
    )
    per_client_ip_without_credential: TokenBucket = Field(
        TokenBucket(rate_per_s=2, burst=20),
        description="Requests per client address that carry no credential header at all "
        "(`authorization`, `x-api-key`): they can only be refused by authz, so they get a "
        "budget of their own, on top of per_client_ip.",
    )
    per_connection: TokenBucket = Field(
        TokenBucket(rate_per_s=1000, burst=2000),
        description="Requests per downstream connection (HTTP/2 multiplexes many on one).",
    )
    listener: TokenBucket = Field(
        TokenBucket(rate_per_s=10_000, burst=20_000),
        description="Requests on the client listener as a whole, after the per-client limits: "
        "the ceiling that protects authz, the rate limiter and the router.",
    )
    share_across_replicas: bool = Field(
        True,
        description="Share the per-address and listener buckets among the Envoy replicas "
        "connected to the health service (to any of its instances, which share the list "
        "through Redis): with N replicas each takes 1/N of every bucket, so "
        "the limits hold for the fleet (exactly when clients spread evenly over the replicas). "
        "Each replica needs a node id of its own (Envoy's `--service-node`). The per-connection "
        "bucket is never shared.",
    )
    max_client_ips: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Client addresses with a bucket of their own (each per-address limit keeps "
        "its own); beyond this the least recently seen address loses its bucket and starts "
        "again with a full one.",
    )
    max_connections: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Client connections Envoy holds open at once; further ones are refused "
        "(the control and egress listeners and the admin interface are not counted).",
    )
    max_heap_mb: int = Field(
        1024,
        ge=64,
        le=1_048_576,
        description="Envoy's heap budget (MiB): at 95% it returns free memory to the system, at "
        "98% it answers new requests 503 until the heap shrinks.",
    )
    max_concurrent_streams: int = Field(
        100, ge=1, le=2_147_483_647, description="Concurrent HTTP/2 streams per connection."
    )
    max_requests_per_io_cycle: int | None = Field(
        1,
        ge=1,
        le=1_000_000,
        description="Requests Envoy takes from one connection per event loop iteration before "
        "it serves the others (null: all that are ready). One client with hundreds of HTTP/2 "
        "streams in flight then cannot make every other client wait behind them.",
    )
    max_request_headers_kb: int = Field(
        60, ge=1, le=8192, description="Largest request header block (KiB); larger get 431."
    )
    idle_timeout_s: float = Field(
        3600.0,
        gt=0,
        le=86_400,
        description="A client connection with no request in flight for this long is closed.",
    )
    stream_idle_timeout_s: float = Field(
        300.0,
        gt=0,
        le=3600,
        description="A request (or streamed answer) with no bytes either way for this long is "
        "reset.",
    )
    request_headers_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Time a client has to send a request's headers once it started it (slow "
        "clients holding connections open).",
    )

    def buckets(self) -> dict[str, TokenBucket]:
        """Each request limit by its name, in the order Envoy applies them."""
        return {
            "per_connection": self.per_connection,
            "per_client_ip_without_credential": self.per_client_ip_without_credential,
            "per_client_ip": self.per_client_ip,
            "listener": self.listener,
        }
