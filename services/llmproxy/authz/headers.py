"""The request headers the authorization service sets on allowed requests.

The rate limiter and the router trust these headers, so Envoy strips a client's copies of every
one of them before ext_authz runs (envoyconf/authz.py): only this service can set them.
"""

from __future__ import annotations

TENANT_HEADER = "x-llmproxy-tenant"
USER_HEADER = "x-llmproxy-user"
KEY_ID_HEADER = "x-llmproxy-key-id"
TIER_HEADER = "x-llmproxy-tier"
IDENTITY_HEADERS = (TENANT_HEADER, USER_HEADER, KEY_ID_HEADER, TIER_HEADER)

# What the request asks for, read from its body once here so that the rate limiter does not
# need the body: its model, and common.tokens' estimate of the tokens it may cost.
MODEL_HEADER = "x-llmproxy-model"
TOKEN_ESTIMATE_HEADER = "x-llmproxy-token-estimate"  # noqa: S105 - a header name

# Envoy's fault filter reads per-downstream-cluster runtime keys (fault.http.<cluster>.*) from
# this header: set to `tenant-<tenant>`, it lets a chaos experiment target one tenant.
FAULT_CLUSTER_HEADER = "x-envoy-downstream-service-cluster"


def fault_cluster(tenant: str) -> str:
    """The downstream cluster a tenant's requests carry in FAULT_CLUSTER_HEADER."""
    return f"tenant-{tenant}"


# Every header the service sets; clients may send none of them.
TRUSTED_HEADERS = (*IDENTITY_HEADERS, MODEL_HEADER, TOKEN_ESTIMATE_HEADER, FAULT_CLUSTER_HEADER)

# Where clients put their key: the OpenAI SDK sends a bearer token, the Anthropic SDK x-api-key.
AUTHORIZATION_HEADER = "authorization"
API_KEY_HEADER = "x-api-key"
CREDENTIAL_HEADERS = (AUTHORIZATION_HEADER, API_KEY_HEADER)
