"""Envoy's side of rate limiting: the ratelimit filter and the descriptors each route sends."""

from __future__ import annotations

from typing import Any

from llmproxy.authz.service import TENANT_HEADER
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
            enable_x_ratelimit_headers="DRAFT_VERSION_03",
            rate_limit_service={
                "grpc_service": grpc_service("ratelimit", envoy.ratelimit_timeout_s),
                "transport_api_version": "V3",
            },
        ),
    }


def route_rate_limits(config: StackConfig) -> list[dict[str, Any]]:
    """The descriptors the OpenAI route sends to the rate limit service."""
    return [
        {
            "actions": [
                {
                    "generic_key": {
                        "descriptor_key": "route",
                        "descriptor_value": "openai",
                    }
                }
            ]
        },
        {
            "actions": [
                {
                    "request_headers": {
                        "header_name": TENANT_HEADER,
                        "descriptor_key": "tenant",
                        "skip_if_absent": True,
                    }
                }
            ]
        },
    ]
