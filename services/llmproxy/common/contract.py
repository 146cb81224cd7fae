"""What the services, Envoy's configuration and the launcher must agree on, declared once.

Every name here is read on one side and written on another: a header authz sets and the rate
limiter and router read, a cluster name envoyconf declares and health's EDS fills, a runtime key
the fault service pushes and Envoy's fault filters read. Each side imports it from here, so the
two can never disagree.
"""

from __future__ import annotations

import re

# The control-plane services, in the order the launcher starts them.
SERVICES = ("router", "ratelimit", "authz", "health", "fault")

# Tenant and user names as authz gives them to keys; whoever else takes a tenant (a fault
# experiment's target, the tenant a cache is warmed for) accepts exactly these.
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
TENANT_RULE = "1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"

# --- Identity: set by authz on allowed requests, trusted by the rate limiter and the router.
# Envoy strips a client's copies of every trusted header before ext_authz runs.
TENANT_HEADER = "x-llmproxy-tenant"
USER_HEADER = "x-llmproxy-user"
KEY_ID_HEADER = "x-llmproxy-key-id"
TIER_HEADER = "x-llmproxy-tier"
IDENTITY_HEADERS = (TENANT_HEADER, USER_HEADER, KEY_ID_HEADER, TIER_HEADER)

# What the request asks for, read from its body once by authz so that the rate limiter does not
# need the body: its model, and common.tokens' estimate of the tokens it may cost.
MODEL_HEADER = "x-llmproxy-model"
TOKEN_ESTIMATE_HEADER = "x-llmproxy-token-estimate"  # noqa: S105 - a header name

# Envoy's fault filter reads per-downstream-cluster runtime keys (fault.http.<cluster>.*) from
# this header: set to `tenant-<tenant>`, it lets a chaos experiment target one tenant.
FAULT_CLUSTER_HEADER = "x-envoy-downstream-service-cluster"

# Every header authz sets; clients may send none of them.
TRUSTED_HEADERS = (*IDENTITY_HEADERS, MODEL_HEADER, TOKEN_ESTIMATE_HEADER, FAULT_CLUSTER_HEADER)

# Where clients put their key: the OpenAI SDK sends a bearer token, the Anthropic SDK x-api-key.
AUTHORIZATION_HEADER = "authorization"
API_KEY_HEADER = "x-api-key"
CREDENTIAL_HEADERS = (AUTHORIZATION_HEADER, API_KEY_HEADER)

# Who made an admin call, as the admin CLI and the launcher name themselves in the audit log.
ACTOR_METADATA = "x-llmproxy-actor"

# Set by the rate limiter on the request Envoy forwards when it reserved tokens: when, in the
# counters' clock (ms), so that the router's reconciliation corrects the window they went into.
RESERVED_AT_HEADER = "x-llmproxy-ratelimit-reserved-at"

# --- The router's answers through Envoy's transcoder.
# The HTTP status of an error answered as an OK gRPC response; Envoy's Lua filter
# (envoyconf/openai_status.lua) turns it into the response status.
STATUS_HEADER = "x-llmproxy-status"
PROVIDER_HEADER = "x-llmproxy-provider"  # which provider answered
CACHE_RESULT_HEADER = "x-cache"  # HIT, MISS or BYPASS

# --- gRPC services Envoy routes to, and the client routes a chaos experiment can target.
OPENAI_SERVICE = "llmproxy.router.v1.OpenAIService"
CHAT_SERVICE = "llmproxy.router.v1.ChatService"
ANTHROPIC_SERVICE = "llmproxy.router.v1.AnthropicService"
# The services Envoy's transcoder serves as REST (the gRPC-only ChatService is not among them).
TRANSCODED_SERVICES = (OPENAI_SERVICE, ANTHROPIC_SERVICE)
# Requests in Anthropic's dialect, by path: the Messages route as clients send it (Claude Code
# adds `?beta=true`), and AnthropicService's methods, which is what the path becomes once the
# transcoder rewrote it (and what gRPC clients send). Whoever answers such a request with an
# error (authz, Envoy's local replies, the router) answers in Anthropic's error shape. A regular
# expression that Python's re and Envoy's RE2 read alike.
MESSAGES_PATH = "/v1/messages"
_MESSAGES_REGEX = f"{re.escape(MESSAGES_PATH)}([/?].*)?"
ANTHROPIC_PATH_REGEX = f"^({_MESSAGES_REGEX}|/{re.escape(ANTHROPIC_SERVICE)}/.*)$"
CLIENT_ROUTES = {
    "chat": (
        f"{OPENAI_SERVICE}/CreateChatCompletion",
        f"{CHAT_SERVICE}/Chat",
        f"{CHAT_SERVICE}/StreamChat",
    ),
    "responses": (
        f"{OPENAI_SERVICE}/CreateResponse",
        f"{OPENAI_SERVICE}/GetResponse",
        f"{OPENAI_SERVICE}/DeleteResponse",
    ),
    "messages": (f"{ANTHROPIC_SERVICE}/CreateMessage",),
    "completions": (f"{OPENAI_SERVICE}/CreateCompletion",),
    "embeddings": (f"{OPENAI_SERVICE}/CreateEmbedding", f"{CHAT_SERVICE}/Embed"),
    "models": (f"{OPENAI_SERVICE}/ListOpenAIModels", f"{OPENAI_SERVICE}/GetModel"),
}

# --- gRPC health service names beyond each service's own (common.component_health).
PROVIDER_HEALTH_PREFIX = "llmproxy.health.provider."  # health's mirror of each provider


def component_health_name(service: str, component: str) -> str:
    """The gRPC health service name one component of a service is reported under."""
    return f"llmproxy.{service}.{component}"


def service_cluster_name(service: str) -> str:
    """The Envoy cluster that reaches one of our services."""
    return f"llmproxy_{service}"


def provider_cluster_name(provider: str) -> str:
    """The Envoy egress cluster that reaches a provider; health's EDS fills its endpoints."""
    return f"provider_{provider}"


# Envoy's local cluster: one endpoint per Envoy replica connected to health's EDS, so that the
# edge tier's buckets are shared across replicas (each takes 1/N of every bucket).
ENVOYS_CLUSTER = "envoy_replicas"


# --- Runtime (RTDS): the fault service pushes this layer, Envoy's fault filters read its keys.
RTDS_RESOURCE = "llmproxy_faults"


def fault_cluster(tenant: str) -> str:
    """The downstream cluster a tenant's requests carry in FAULT_CLUSTER_HEADER."""
    return f"tenant-{tenant}"


def route_fault_prefix(route: str) -> str:
    """Runtime key prefix of a client route's faults."""
    return f"fault.route.{route}."


def provider_fault_prefix(provider: str) -> str:
    """Runtime key prefix of a provider's (egress) faults."""
    return f"fault.provider.{provider}."


def tenant_fault_prefix(tenant: str) -> str:
    """Envoy's per-downstream-cluster runtime key prefix for a tenant."""
    return f"fault.http.{fault_cluster(tenant)}."
