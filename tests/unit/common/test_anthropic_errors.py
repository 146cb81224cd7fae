"""Anthropic's error shape and which paths speak it."""

from __future__ import annotations

import json

import pytest
from google.api import annotations_pb2

from llmproxy._gen.router.v1 import anthropic_pb2
from llmproxy.common.anthropic_errors import error_body, error_type, is_anthropic_path
from llmproxy.common.contract import MESSAGES_PATH


@pytest.mark.parametrize(
    ("path", "anthropic"),
    [
        ("/v1/messages", True),
        ("/v1/messages?beta=true", True),
        ("/v1/messages/count_tokens", True),
        ("/llmproxy.router.v1.AnthropicService/CreateMessage", True),
        ("/v1/messagesx", False),
        ("/v1/chat/completions", False),
        ("/llmproxy.router.v1.OpenAIService/CreateChatCompletion", False),
        ("/llmproxy.router.v1xAnthropicService/CreateMessage", False),
        ("", False),
    ],
)
def test_anthropic_paths(path: str, anthropic: bool) -> None:
    assert is_anthropic_path(path) is anthropic


def test_the_messages_path_is_the_protos() -> None:
    method = anthropic_pb2.DESCRIPTOR.services_by_name["AnthropicService"].methods_by_name[
        "CreateMessage"
    ]
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    assert rule.post == MESSAGES_PATH


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_each_status_has_anthropics_type(status: int, expected: str) -> None:
    assert error_type(status) == expected
    assert json.loads(error_body(status, "why")) == {
        "type": "error",
        "error": {"type": expected, "message": "why"},
    }
