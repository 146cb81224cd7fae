"""The descriptors Envoy sends for each request, and the headers they are built from.

One module for both sides of the contract: envoyconf builds Envoy's rate limit actions from
DESCRIPTORS, and ratelimit_client.py rebuilds the token descriptors from the same headers to
reconcile a reservation, so the two can never disagree.

The headers are set by the authz service after it authorizes a request (Envoy strips clients'
copies first), so no descriptor value comes from the client except its IP address.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llmproxy.common.contract import (
    KEY_ID_HEADER,
    MODEL_HEADER,
    TENANT_HEADER,
    TIER_HEADER,
    USER_HEADER,
)

# Descriptor keys, and the header each is read from.
HEADER_KEYS = {
    "tenant": TENANT_HEADER,
    "key_id": KEY_ID_HEADER,
    "user": USER_HEADER,
    "tier": TIER_HEADER,
    "model": MODEL_HEADER,
}
ROUTE_KEY = "route"
REMOTE_ADDRESS_KEY = "remote_address"  # Envoy's name for the client IP entry
TOKENS_KEY = "tokens"  # first entry of descriptors whose hits are the request's token estimate
TOKENS_VALUE = "estimate"


@dataclass(frozen=True)
class DescriptorShape:
    """One descriptor Envoy sends: a generic first entry (optional) then header or IP entries."""

    generic: tuple[str, str] | None
    keys: tuple[str, ...]

    @property
    def tokens(self) -> bool:
        """Whether its hits are the request's token estimate rather than 1."""
        return self.generic == (TOKENS_KEY, TOKENS_VALUE)


_TOKENS = (TOKENS_KEY, TOKENS_VALUE)

# Every descriptor of a request through the OpenAI route. Limits are hierarchical the way
# envoyproxy/ratelimit's are: tenant > key > model is three descriptors, each its own limit.
DESCRIPTORS: tuple[DescriptorShape, ...] = (
    DescriptorShape((ROUTE_KEY, "openai"), ()),
    DescriptorShape(None, ("tenant",)),
    DescriptorShape(None, ("tenant", "key_id")),
    DescriptorShape(None, ("tenant", "key_id", "model")),
    DescriptorShape(None, ("tenant", "user")),
    DescriptorShape(None, ("tier", "key_id")),
    DescriptorShape(None, ("model",)),
    DescriptorShape(None, (REMOTE_ADDRESS_KEY,)),
    DescriptorShape(_TOKENS, ("tenant",)),
    DescriptorShape(_TOKENS, ("tenant", "key_id")),
    DescriptorShape(_TOKENS, ("tenant", "key_id", "model")),
    DescriptorShape(_TOKENS, ("model",)),
)

Entries = tuple[tuple[str, str], ...]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def token_descriptors(headers: Mapping[str, str]) -> list[Entries]:
    """The token descriptors Envoy sent for a request with these headers (as the router got them).

    A descriptor whose header is missing is left out, as Envoy leaves it out.
    """
    found: list[Entries] = []
    for shape in DESCRIPTORS:
        if not shape.tokens or shape.generic is None:
            continue
        entries: list[tuple[str, str]] = [shape.generic]
        for key in shape.keys:
            value = _header(headers, HEADER_KEYS[key])
            if value is None:
                break
            entries.append((key, value))
        else:
            found.append(tuple(entries))
    return found


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value from a mapping whose key case is unknown (gRPC metadata is lowercase)."""
    return _header(headers, name)
