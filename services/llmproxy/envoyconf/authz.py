"""Envoy's side of authorization: identity headers stripped, then the ext_authz check."""

from __future__ import annotations

from typing import Any

from llmproxy.authz.service import IDENTITY_HEADERS
from llmproxy.config import StackConfig
from llmproxy.envoyconf.clusters import grpc_service, typed


def authz_filters(config: StackConfig) -> list[dict[str, Any]]:
    """The HTTP filters that authorize a client request, in order."""
    envoy = config.envoy
    return [
        {
            # Identity headers are set by the authz service only; a client's copies are dropped
            # before ext_authz runs so they can never be spoofed.
            "name": "envoy.filters.http.header_mutation",
            "typed_config": typed(
                "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                mutations={"request_mutations": [{"remove": h} for h in IDENTITY_HEADERS]},
            ),
        },
        {
            "name": "envoy.filters.http.ext_authz",
            "typed_config": typed(
                "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                grpc_service=grpc_service("authz", envoy.ext_authz_timeout_s),
                transport_api_version="V3",
                # Fail closed: without a verdict no request may spend provider money.
                failure_mode_allow=False,
                status_on_error={"code": "ServiceUnavailable"},
            ),
        },
    ]
