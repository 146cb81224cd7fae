"""Envoy's side of authorization: trusted headers stripped, then the ext_authz check."""

from __future__ import annotations

from typing import Any

from llmproxy.common.contract import CREDENTIAL_HEADERS, TRUSTED_HEADERS
from llmproxy.config import StackConfig
from llmproxy.envoyconf.clusters import grpc_service, typed


def authz_filters(config: StackConfig) -> list[dict[str, Any]]:
    """The HTTP filters that authorize a client request, in order."""
    envoy = config.envoy
    return [
        {
            # Identity, model and token-estimate headers are set by the authz service only; a
            # client's copies are dropped before ext_authz runs so they can never be spoofed.
            "name": "envoy.filters.http.header_mutation",
            "typed_config": typed(
                "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                mutations={"request_mutations": [{"remove": h} for h in TRUSTED_HEADERS]},
            ),
        },
        {
            "name": "envoy.filters.http.ext_authz",
            "typed_config": typed(
                "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                grpc_service=grpc_service("authz", envoy.ext_authz_timeout_s),
                transport_api_version="V3",
                # Fail closed by default: without a verdict no request may spend provider money.
                failure_mode_allow=config.services.authz.failure_mode_allow,
                status_on_error={"code": "ServiceUnavailable"},
                # The whole body, so the service can check the model and estimate tokens;
                # bytes, because gRPC clients' bodies are not text.
                with_request_body={
                    "max_request_bytes": envoy.max_request_bytes,
                    "allow_partial_message": False,
                    "pack_as_bytes": True,
                },
                # Only the headers a decision needs: the service never sees cookies and such.
                allowed_headers={
                    "patterns": [{"exact": name} for name in (*CREDENTIAL_HEADERS, "content-type")]
                },
            ),
        },
    ]


def denial_reply_mapper() -> dict[str, Any]:
    """A local_reply_config mapper that leaves the authz service's denials as they are.

    Envoy sends ext_authz denials as local replies, so the listener's mappers (Envoy's own 429,
    503... into OpenAI JSON) would rewrite them too; this one, listed first, matches denials
    (response flag UAEX with a 4xx status: the service's own JSON) and changes nothing. A 503
    because the service is down carries UAEX too and still gets the JSON mapper.
    """
    return {
        "filter": {
            "and_filter": {
                "filters": [
                    {"response_flag_filter": {"flags": ["UAEX"]}},
                    {
                        "status_code_filter": {
                            "comparison": {
                                "op": "LE",
                                "value": {"default_value": 499, "runtime_key": "unused"},
                            }
                        }
                    },
                ]
            }
        }
    }
