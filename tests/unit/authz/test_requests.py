"""Reading the key and the body out of Envoy's CheckRequest."""

from __future__ import annotations

import json
import struct

import pytest
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2

from llmproxy._gen.router.v1 import anthropic_pb2, chat_pb2, openai_pb2
from llmproxy.authz.requests import (
    GRPC_REQUESTS,
    GRPC_WITHOUT_MODEL,
    check_input,
    credential,
    json_body,
)
from llmproxy.common.tokens import estimate_request_tokens


def check_request(
    headers: dict[str, str], body: bytes = b"", *, as_text: bool = False, path: str = "/v1/x"
) -> external_auth_pb2.CheckRequest:
    http = attribute_context_pb2.AttributeContext.HttpRequest(headers=headers, path=path)
    if as_text:
        http.body = body.decode()
    else:
        http.raw_body = body
    return external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            request=attribute_context_pb2.AttributeContext.Request(http=http)
        )
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"authorization": "Bearer sk-1"}, "sk-1"),
        ({"authorization": "bearer   sk-1  "}, "sk-1"),
        ({"x-api-key": "sk-2"}, "sk-2"),
        ({"authorization": "Bearer sk-1", "x-api-key": "sk-2"}, "sk-1"),
        ({"authorization": "Basic dXNlcjpwYXNz", "x-api-key": "sk-2"}, "sk-2"),
        ({"authorization": "Basic dXNlcjpwYXNz"}, None),
        ({"authorization": "Bearer "}, None),
        ({"x-api-key": "  "}, None),
        ({}, None),
    ],
)
def test_the_key_comes_from_a_bearer_token_or_x_api_key(
    headers: dict[str, str], expected: str | None
) -> None:
    assert credential(headers) == expected


BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def test_a_json_body_gives_the_model_and_token_estimate() -> None:
    check = check_input(check_request({"authorization": "Bearer k"}, json.dumps(BODY).encode()))
    assert check.credential == "k"
    assert check.model == "gpt-4o-mini"
    assert check.token_estimate == estimate_request_tokens(BODY)


def test_a_body_sent_as_text_is_read_too() -> None:
    check = check_input(check_request({}, json.dumps(BODY).encode(), as_text=True))
    assert check.model == "gpt-4o-mini"


def grpc_frame(message: bytes, *, compressed: int = 0) -> bytes:
    return struct.pack(">BI", compressed, len(message)) + message


CHAT = "/llmproxy.router.v1.OpenAIService/CreateChatCompletion"


def test_a_grpc_clients_http_body_is_unwrapped() -> None:
    request = openai_pb2.CreateChatCompletionRequest()
    request.body.data = json.dumps(BODY).encode()
    raw = grpc_frame(request.SerializeToString())
    assert json_body(raw, "application/grpc", CHAT) == BODY


def test_a_typed_grpc_chat_has_the_json_apis_shape() -> None:
    chat = chat_pb2.ChatRequest(
        model="llama-3.1-8b",
        messages=[chat_pb2.ChatMessage(role="user", content="hello")],
        max_tokens=9,
    )
    plain = json_body(
        grpc_frame(chat.SerializeToString()),
        "application/grpc",
        "/llmproxy.router.v1.ChatService/Chat",
    )
    assert plain == {
        "model": "llama-3.1-8b",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 9,
    }
    assert estimate_request_tokens(plain) == estimate_request_tokens(
        {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 9}
    )
    streamed = chat_pb2.StreamChatRequest(chat=chat, include_usage=True)
    check = check_input(
        check_request(
            {"content-type": "application/grpc+proto"},
            grpc_frame(streamed.SerializeToString()),
            path="/llmproxy.router.v1.ChatService/StreamChat",
        )
    )
    assert check.model == "llama-3.1-8b"
    embed = chat_pb2.EmbedRequest(model="text-embedding-3-small", input=["a"])
    body = json_body(
        grpc_frame(embed.SerializeToString()),
        "application/grpc",
        "/llmproxy.router.v1.ChatService/Embed",
    )
    assert body == {"model": "text-embedding-3-small", "input": ["a"]}


def test_every_router_method_reachable_by_grpc_is_decoded_or_has_no_model() -> None:
    """A new router RPC must be taught to the authz service, or its model goes unchecked."""
    for service in (
        openai_pb2.DESCRIPTOR.services_by_name["OpenAIService"],
        chat_pb2.DESCRIPTOR.services_by_name["ChatService"],
        anthropic_pb2.DESCRIPTOR.services_by_name["AnthropicService"],
    ):
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            assert (path in GRPC_REQUESTS) != (path in GRPC_WITHOUT_MODEL), path


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"", "application/json"),
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"text"', "application/json"),
        (b"[" * 100_000, "application/json"),
        (b"\x00\x00", "application/grpc"),
        (grpc_frame(b"\xff\xff\xff"), "application/grpc"),
        (grpc_frame(b"abc", compressed=1), "application/grpc"),
        (grpc_frame(b"abc")[:-1], "application/grpc"),
        (grpc_frame(b""), "application/grpc"),  # an empty request message
    ],
)
def test_bodies_that_are_not_json_objects_have_no_model(raw: bytes, content_type: str) -> None:
    assert json_body(raw, content_type, CHAT) is None
    check = check_input(check_request({"content-type": content_type}, raw, path="/x/Y"))
    assert check.model is None
    assert check.token_estimate is None


def test_a_model_that_is_not_a_string_is_no_model() -> None:
    check = check_input(check_request({}, b'{"model": 7, "messages": []}'))
    assert check.model is None
    assert check.token_estimate is not None
