"""Envoy's side of rate limiting: the ratelimit filter and the descriptors each route sends."""

from __future__ import annotations

from typing import Any

from llmproxy.common.contract import TOKEN_ESTIMATE_HEADER
from llmproxy.common.ratelimit_descriptors import (
    DESCRIPTORS,
    HEADER_KEYS,
    REMOTE_ADDRESS_KEY,
    DescriptorShape,
)
from llmproxy.config import StackConfig
from llmproxy.envoyconf.clusters import grpc_service, typed


def ratelimit_filter(config: StackConfig) -> dict[str, Any]:
    """The rate limit HTTP filter calling our ratelimit service."""
    envoy = config.envoy
    return {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": typed(
            "envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            domain=config.services.ratelimit.domain,
            timeout=f"{envoy.ratelimit_timeout_s}s",
            # Fail open: a limiter outage must not take the gateway down with it; the
            # limiter itself degrades to local limits before it ever errors.
            failure_mode_deny=False,
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
