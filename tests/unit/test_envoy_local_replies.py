"""Envoy's own answers in each API's error shape: Anthropic's on its paths, OpenAI's elsewhere.

Which `:path` a mapper sees (REST before the transcoder, the method after it) is shown through
a real Envoy in tests/e2e/test_anthropic_messages.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from llmproxy.common.contract import ANTHROPIC_PATH_REGEX
from llmproxy.config import DEFAULT_CONFIG, load_config
from llmproxy.envoyconf.build import build_bootstrap
from llmproxy.envoyconf.local_replies import UNKNOWN_URL_MESSAGE, local_reply_config
from tests.unit.test_envoy_config import DESCRIPTOR

RETRY_AFTER = [{"header": {"key": "retry-after", "value": "1"}, "append_action": "ADD_IF_ABSENT"}]
PATH_FILTER = {
    "header_filter": {
        "header": {"name": ":path", "string_match": {"safe_regex": {"regex": ANTHROPIC_PATH_REGEX}}}
    }
}


def conditions(mapper: dict[str, Any]) -> list[dict[str, Any]]:
    found = mapper["filter"]
    return list(found["and_filter"]["filters"]) if "and_filter" in found else [found]


def anthropic(mappers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in mappers if PATH_FILTER in conditions(m)]


def status_of(mapper: dict[str, Any]) -> int | None:
    for condition in conditions(mapper):
        comparison = condition.get("status_code_filter", {}).get("comparison", {})
        if comparison.get("op") == "EQ":
            return int(comparison["value"]["default_value"])
    return None


def test_the_client_listener_uses_them() -> None:
    bootstrap = build_bootstrap(load_config(DEFAULT_CONFIG, environ={}), DESCRIPTOR)
    (client,) = [x for x in bootstrap["static_resources"]["listeners"] if x["name"] == "client"]
    hcm = client["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["local_reply_config"] == local_reply_config()


def test_anthropic_mappers_come_after_the_denials_and_before_openais() -> None:
    mappers = local_reply_config()["mappers"]
    ours = anthropic(mappers)
    first = mappers.index(ours[0])
    assert first == 1  # after the authz denials' mapper, which leaves every denial alone
    assert mappers[first : first + len(ours)] == ours
    # Every later mapper is OpenAI's and matches any path.
    assert all(
        "error" in m["body_format_override"]["json_format"] for m in mappers[1 + len(ours) :]
    )
    assert all(conditions(m)[-1] == PATH_FILTER for m in ours)


@pytest.mark.parametrize(
    ("path", "anthropic_path"),
    [
        ("/v1/messages", True),
        ("/v1/messages?beta=true", True),
        ("/llmproxy.router.v1.AnthropicService/CreateMessage", True),
        ("/v1/chat/completions", False),
        ("/llmproxy.router.v1.OpenAIService/CreateChatCompletion", False),
    ],
)
def test_the_path_regex_matches_both_forms_of_the_route(path: str, anthropic_path: bool) -> None:
    # Envoy's RE2 matches the whole value, as fullmatch does.
    assert (re.fullmatch(ANTHROPIC_PATH_REGEX, path) is not None) is anthropic_path


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
    ],
)
def test_envoys_statuses_get_anthropics_type(status: int, error_type: str) -> None:
    ours = anthropic(local_reply_config()["mappers"])
    (mapper,) = [m for m in ours if status_of(m) == status and len(conditions(m)) == 2]
    body = mapper["body_format_override"]
    assert body["content_type"] == "application/json"
    assert body["json_format"]["type"] == "error"
    assert body["json_format"]["error"]["type"] == error_type
    # The rate limiter's and the edge tier's own headers stay; Envoy's 503s get retry-after.
    assert mapper.get("headers_to_add") == (RETRY_AFTER if status == 503 else None)
    if status == 404:
        assert mapper["body"] == {"inline_string": UNKNOWN_URL_MESSAGE}
        assert body["json_format"]["error"]["message"] == "%LOCAL_REPLY_BODY%"


def test_edge_refusals_and_failed_checks_get_their_own_messages() -> None:
    ours = anthropic(local_reply_config()["mappers"])
    (edge,) = [m for m in ours if "extension_filter" in conditions(m)[0]]
    error = edge["body_format_override"]["json_format"]["error"]
    assert error["type"] == "rate_limit_error"
    assert "%RESP(X-LLMPROXY-EDGE-LIMIT)%" in error["message"]
    assert ours.index(edge) < min(ours.index(m) for m in ours if status_of(m) == 429)
    checks = [m for m in ours if "response_flag_filter" in conditions(m)[0]]
    assert [c["filter"]["and_filter"]["filters"][0]["response_flag_filter"] for c in checks] == [
        {"flags": ["UAEX"]},
        {"flags": ["RLSE"]},
    ]
    for check in checks:
        assert status_of(check) == 503
        assert check["body"]["inline_string"].startswith("The ")
        assert check["body_format_override"]["json_format"]["error"]["type"] == "overloaded_error"
        assert check["headers_to_add"] == RETRY_AFTER
        assert ours.index(check) < min(
            ours.index(m)
            for m in ours
            if status_of(m) == 503 and m is not check and len(conditions(m)) == 2
        )
