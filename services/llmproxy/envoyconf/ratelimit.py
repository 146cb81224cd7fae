"""Envoy's side of rate limiting: the ratelimit filter and the descriptors each route sends.

Envoy sends all of a request's descriptors in one check, and the filter has one failure mode: so
a check that cannot finish (the service down, overloaded, or slower than the timeout) refuses
the request when any enforced limit those descriptors can reach is `closed` in the limits file,
and lets it through only when every such limit is `open`. With the shipped file (exact limits
and token budgets closed, only the route safety net open) it refuses.
"""

from __future__ import annotations

from typing import Any

from llmproxy.common.contract import TOKEN_ESTIMATE_HEADER
from llmproxy.common.limits_file import DescriptorSpec, LimitsFile, failure_mode_of, load_limits
from llmproxy.common.ratelimit_descriptors import (
    DESCRIPTORS,
    HEADER_KEYS,
    REMOTE_ADDRESS_KEY,
    DescriptorShape,
)
from llmproxy.config import StackConfig
from llmproxy.envoyconf.clusters import grpc_service, typed


def ratelimit_filter(config: StackConfig) -> dict[str, Any]:
    """The rate limit HTTP filter calling our ratelimit service; reads the limits file."""
    envoy = config.envoy
    settings = config.services.ratelimit
    limits = load_limits(settings.limits_file, settings.domain).spec
    return {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": typed(
            "envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            domain=settings.domain,
            timeout=f"{envoy.ratelimit_timeout_s}s",
            # The limits file decides (module docstring). A refusal is a 503 that Envoy's
            # local reply turns into OpenAI's error body with retry-after (overload.py). The
            # limiter itself degrades to local limits when Redis fails, so it errors only when
            # it cannot answer in time or at all.
            failure_mode_deny=failure_mode_deny(limits),
            status_on_error={"code": "ServiceUnavailable"},
            # X-RateLimit-Limit/-Remaining/-Reset on every response, from the statuses.
            enable_x_ratelimit_headers="DRAFT_VERSION_03",
            rate_limit_service={
                "grpc_service": grpc_service("ratelimit", envoy.ratelimit_timeout_s),
                "transport_api_version": "V3",
            },
            # The descriptors live on the filter, not on routes: when this filter runs, an
            # OpenAI request still has its REST path (the transcoder comes later), so it
            # matches no gRPC route yet and route-level descriptors would never be sent.
            rate_limits=filter_rate_limits(),
        ),
    }


def _action(key: str) -> dict[str, Any]:
    if key == REMOTE_ADDRESS_KEY:
        return {"remote_address": {}}
    # A missing header skips the whole descriptor (rather than sending it incomplete).
    return {"request_headers": {"header_name": HEADER_KEYS[key], "descriptor_key": key}}


def _rate_limit(shape: DescriptorShape) -> dict[str, Any]:
    actions: list[dict[str, Any]] = []
    if shape.generic is not None:
        key, value = shape.generic
        actions.append({"generic_key": {"descriptor_key": key, "descriptor_value": value}})
    actions.extend(_action(key) for key in shape.keys)
    entry: dict[str, Any] = {"actions": actions}
    if shape.tokens:
        # The request's token estimate (set by the authz service) is the descriptor's hits, so
        # the check reserves the tokens atomically; Envoy drops the descriptor when the header
        # is absent or not a number.
        entry["hits_addend"] = {"format": f"%REQ({TOKEN_ESTIMATE_HEADER})%"}
    return entry


def filter_rate_limits() -> list[dict[str, Any]]:
    """The descriptors Envoy sends for every request (descriptors.py)."""
    return [_rate_limit(shape) for shape in DESCRIPTORS]


def _reaches(shape: DescriptorShape, path: tuple[tuple[str, str], ...]) -> bool:
    # Whether a descriptor of this shape can end at the limit configured at path (value "":
    # any value; "x*": a prefix). Only the generic entry's value is fixed; headers vary.
    entries: list[tuple[str, str | None]] = []
    if shape.generic is not None:
        entries.append(shape.generic)
    entries.extend((key, None) for key in shape.keys)
    if len(entries) != len(path):
        return False
    for (key, value), (limit_key, limit_value) in zip(entries, path, strict=True):
        if key != limit_key:
            return False
        if value is None or not limit_value:
            continue
        if limit_value.endswith("*"):
            if not value.startswith(limit_value[:-1]):
                return False
        elif value != limit_value:
            return False
    return True


def _closed_limits(
    children: list[DescriptorSpec], path: tuple[tuple[str, str], ...] = ()
) -> list[tuple[tuple[str, str], ...]]:
    found = []
    for spec in children:
        here = (*path, (spec.key, spec.value or ""))
        if (
            spec.rate_limit is not None
            and not spec.shadow_mode  # never refuses, so its failure cannot refuse either
            and failure_mode_of(spec, len(path)) == "closed"
            and any(_reaches(shape, here) for shape in DESCRIPTORS)
        ):
            found.append(here)
        found.extend(_closed_limits(spec.descriptors, here))
    return found


def failure_mode_deny(limits: LimitsFile) -> bool:
    """Whether a check that cannot finish refuses the request: when any limit it reaches is closed.

    Only enforced limits that a descriptor Envoy sends can reach count: a shadow limit never
    refuses, and a limit on descriptors Envoy never sends never applies.
    """
    return bool(_closed_limits(limits.descriptors))
