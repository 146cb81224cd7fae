"""The authorization servicers: Envoy's ext_authz Check and the authz control API.

Until API keys exist (a later issue), every request is allowed as the anonymous tenant; the
identity headers are set all the same, so the services behind Envoy always find them.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy.common.grpc_types import Context

TENANT_HEADER = "x-llmproxy-tenant"
USER_HEADER = "x-llmproxy-user"
KEY_ID_HEADER = "x-llmproxy-key-id"
TIER_HEADER = "x-llmproxy-tier"
IDENTITY_HEADERS = (TENANT_HEADER, USER_HEADER, KEY_ID_HEADER, TIER_HEADER)
ANONYMOUS = {
    TENANT_HEADER: "anonymous",
    USER_HEADER: "anonymous",
    KEY_ID_HEADER: "none",
    TIER_HEADER: "default",
}


def _set_header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):
    """Envoy's ext_authz Check: allows every request as the anonymous tenant."""

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: Context
    ) -> external_auth_pb2.CheckResponse:
        """Allow the request and name its (anonymous) identity for the rate limiter and router."""
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[_set_header(name, value) for name, value in ANONYMOUS.items()]
            ),
        )


class AuthzControlServicer(authz_pb2_grpc.AuthzServiceServicer):
    """The authorization control API for operators."""

    async def GetPolicy(
        self, request: authz_pb2.GetPolicyRequest, context: Context
    ) -> authz_pb2.GetPolicyResponse:
        """Report the policy in force."""
        return authz_pb2.GetPolicyResponse(
            mode=authz_pb2.POLICY_MODE_ALLOW_ALL, identity_headers=list(IDENTITY_HEADERS)
        )
