"""Bodies that would crash a recursive reader (too deep, numbers too long) are 400s on every
inbound API, in each API's error shape, and authz does not try to estimate them."""

from __future__ import annotations

import json

import pytest

from llmproxy._gen.router.v1 import anthropic_pb2, openai_pb2
from llmproxy.authz.requests import json_body
from llmproxy.router.anthropic_api import AnthropicServicer
from tests.unit.router.fuzzing import Fuzzer, assert_openai_error, fuzzer

# Parsed, but deeper than any recursive walk after the parser may go.
DEEP = "[" * 500 + "]" * 500
# Too deep for the parser itself.
DEEPER = "[" * 5000 + "]" * 5000
LONG_NUMBER = "1" * 5000
ANTHROPIC = {"anthropic-version": "2023-06-01"}


def bodies() -> list[bytes]:
    chat = '{"model": "m", "messages": [{"role": "user", "content": %s}]}'
    return [(chat % value).encode() for value in (DEEP, DEEPER, LONG_NUMBER)]


@pytest.fixture(scope="module")
def router() -> object:
    with fuzzer() as found:
        yield found


@pytest.mark.parametrize("raw", bodies(), ids=["deep", "deeper", "long-number"])
@pytest.mark.parametrize("route", ["chat", "completions", "responses"])
def test_openai_routes_answer_400(router: Fuzzer, route: str, raw: bytes) -> None:
    servicer = router.servicer
    rpc, request = {
        "chat": (servicer.CreateChatCompletion, openai_pb2.CreateChatCompletionRequest),
        "completions": (servicer.CreateCompletion, openai_pb2.CreateCompletionRequest),
        "responses": (servicer.CreateResponse, openai_pb2.CreateResponseRequest),
    }[route]
    reply = router.call(rpc, request(body={"data": raw}))
    assert reply.status == 400
    assert_openai_error(reply)


@pytest.mark.parametrize("raw", bodies(), ids=["deep", "deeper", "long-number"])
def test_messages_answers_an_anthropic_400(router: Fuzzer, raw: bytes) -> None:
    anthropic = AnthropicServicer(router.servicer)
    request = anthropic_pb2.CreateMessageRequest(body={"data": raw})
    reply = router.call(anthropic.CreateMessage, request, ANTHROPIC)
    assert reply.status == 400
    assert json.loads(reply.data)["error"]["type"] == "invalid_request_error"


def test_authz_reads_no_model_from_a_deep_body() -> None:
    deep = b'{"model": "m", "messages": %s}' % DEEP.encode()
    assert json_body(deep, "application/json") is None
    assert json_body(b'{"model": "m", "n": %s}' % LONG_NUMBER.encode(), "application/json") is None
    assert json_body(b'{"model": "m"}', "application/json") == {"model": "m"}
