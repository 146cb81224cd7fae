"""Envoy's own answers on the client listener, in the error shape of the request's API.

Envoy answers some requests itself (a local reply): the edge tier's and the exact tier's 429s,
a 503 when a check could not finish, a body too large (413), the router unreachable or too
slow (502-504), a fault experiment's abort, an unknown URL (404). The listener's
local_reply_config rewrites them into the JSON the client's SDK parses: Anthropic's
(common.anthropic_errors) on Anthropic's paths, OpenAI's everywhere else, keeping the headers
that come with them (the limits' `retry-after` and `x-ratelimit-*`, overload.py's
`retry-after` on a 503).

Anthropic's paths are told by `:path` (contract.ANTHROPIC_PATH_REGEX), which covers both what a
mapper may see: the REST path for a reply made before the transcoder (edge tier, authz, body
size, unknown URL), the method path it rewrote the request to for one made after it (exact
tier, router, fault aborts), which is also what gRPC clients send.

Mappers, first match wins: authz's own denials untouched (they are in their API's shape
already), then Anthropic's on its paths, then OpenAI's.
"""

from __future__ import annotations

from typing import Any

from llmproxy.common.anthropic_errors import error_type as anthropic_error_type
from llmproxy.common.contract import ANTHROPIC_PATH_REGEX
from llmproxy.envoyconf.authz import denial_reply_mapper
from llmproxy.envoyconf.edge import EDGE_REFUSAL_MESSAGE, edge_refusal_filter, edge_reply_mapper
from llmproxy.envoyconf.overload import check_failure_mappers, overload_reply_headers

# Envoy's statuses in OpenAI's error shape, each with its error type, so SDKs raise their typed
# errors with a message.
OPENAI_TYPES = {
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout",
}
# Anthropic's paths also get the unknown URL's 404 (e.g. /v1/messages/count_tokens, which the
# gateway does not serve) in their shape; its body is the route's OpenAI JSON, so the message
# is given here.
ANTHROPIC_STATUSES = (404, 413, 429, 502, 503, 504)
UNKNOWN_URL_MESSAGE = "Unknown request URL. See the README for the supported endpoints."
LOCAL_REPLY_BODY = "%LOCAL_REPLY_BODY%"


def openai_body(error_type: str, message: str = LOCAL_REPLY_BODY) -> dict[str, Any]:
    """A body_format_override in OpenAI's error shape (code: the type, as Envoy's own)."""
    return {
        "json_format": {
            "error": {"message": message, "type": error_type, "param": None, "code": error_type}
        },
        "content_type": "application/json",
    }


def anthropic_body(status: int, message: str = LOCAL_REPLY_BODY) -> dict[str, Any]:
    """A body_format_override in Anthropic's error shape, with the type of status."""
    return {
        "json_format": {
            "type": "error",
            "error": {"type": anthropic_error_type(status), "message": message},
        },
        "content_type": "application/json",
    }


def status_is(status: int) -> dict[str, Any]:
    """An access log filter matching one response status."""
    value = {"default_value": status, "runtime_key": "unused"}
    return {"status_code_filter": {"comparison": {"op": "EQ", "value": value}}}


def anthropic_path() -> dict[str, Any]:
    """An access log filter matching requests on Anthropic's paths."""
    regex = {"safe_regex": {"regex": ANTHROPIC_PATH_REGEX}}
    return {"header_filter": {"header": {"name": ":path", "string_match": regex}}}


def _on_anthropic_paths(mapper: dict[str, Any]) -> dict[str, Any]:
    # The mapper's own conditions first, then the path: one and_filter.
    inner = mapper["filter"]
    conditions = inner["and_filter"]["filters"] if "and_filter" in inner else [inner]
    return {**mapper, "filter": {"and_filter": {"filters": [*conditions, anthropic_path()]}}}


def anthropic_mappers() -> list[dict[str, Any]]:
    """The mappers of Envoy's own answers on Anthropic's paths."""
    edge = {
        "filter": edge_refusal_filter(),
        "body_format_override": anthropic_body(429, EDGE_REFUSAL_MESSAGE),
    }
    statuses = [
        {
            "filter": status_is(status),
            **({"body": {"inline_string": UNKNOWN_URL_MESSAGE}} if status == 404 else {}),
            "body_format_override": anthropic_body(status),
            **overload_reply_headers(status),
        }
        for status in ANTHROPIC_STATUSES
    ]
    return [
        _on_anthropic_paths(mapper)
        for mapper in (edge, *check_failure_mappers(anthropic_body(503)), *statuses)
    ]


def openai_mappers() -> list[dict[str, Any]]:
    """The mappers of Envoy's own answers everywhere else."""
    return [
        # The edge tier's refusals, before the exact tier's 429s below.
        edge_reply_mapper(),
        # Then checks that could not finish in time: a message saying so.
        *check_failure_mappers(openai_body(OPENAI_TYPES[503])),
        *(
            {
                "filter": status_is(status),
                "body_format_override": openai_body(error_type),
                **overload_reply_headers(status),
            }
            for status, error_type in OPENAI_TYPES.items()
        ),
    ]


def local_reply_config() -> dict[str, Any]:
    """The client listener's local_reply_config."""
    return {
        "mappers": [
            # First: the authz service's denials (401/403/429) keep their own JSON body.
            denial_reply_mapper(),
            *anthropic_mappers(),
            *openai_mappers(),
        ]
    }
