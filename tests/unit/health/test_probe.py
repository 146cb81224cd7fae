"""Probe requests per provider kind and mode, and how answers are judged."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from llmproxy.common.settings import ProviderSettings
from llmproxy.health.answers import check_answer
from llmproxy.health.probe import Prober
from llmproxy.health.records import ProbeResult
from llmproxy.health.settings import ProviderProbeSettings

OPENAI = ProviderSettings(name="o", base_url="https://api.example/v1", api_key_env="O_KEY")
ANTHROPIC = ProviderSettings(
    name="a", kind="anthropic", base_url="https://anthropic.example/v1", api_key_env="A_KEY"
)
ENVIRON = {"O_KEY": "sk-o", "A_KEY": "sk-a"}
MODELS = json.dumps({"object": "list", "data": [{"id": "m1"}, {"id": "m2"}]}).encode()


@pytest.mark.parametrize(
    ("kind", "mode", "status", "body", "expected"),
    [
        ("openai", "models", 200, MODELS, (True, "2 models listed", False)),
        ("openai", "models", 429, b"slow down", (True, "rate limited (429)", True)),
        ("openai", "models", 503, b"down\nfor now", (False, "HTTP 503: down for now", False)),
        ("openai", "models", 200, b"<html>", (False, "not JSON: <html>", False)),
        (
            "openai",
            "models",
            200,
            b'{"data": 3}',
            (False, "no `data` list in the model list", False),
        ),
        (
            "anthropic",
            "models",
            200,
            b'{"data": [{"type": "model"}]}',
            (False, "model list entry 0 has no string `id`", False),
        ),
        (
            "openai",
            "completion",
            200,
            b'{"choices": [{"message": {"content": "p"}}]}',
            (True, "one-token completion answered", False),
        ),
        (
            "openai",
            "completion",
            200,
            b'{"choices": []}',
            (False, "no `choices` in the completion", False),
        ),
        (
            "anthropic",
            "completion",
            200,
            b'{"type": "message", "content": []}',
            (True, "one-token completion answered", False),
        ),
        (
            "anthropic",
            "completion",
            200,
            b'{"type": "error"}',
            (False, "not a `message` object", False),
        ),
    ],
)
def test_answers_are_judged_by_status_and_shape(
    kind: str, mode: str, status: int, body: bytes, expected: tuple[bool, str, bool]
) -> None:
    verdict = check_answer(kind, mode, status, body)
    assert (verdict.ok, verdict.detail, verdict.rate_limited) == expected


def test_long_error_bodies_are_cut() -> None:
    verdict = check_answer("openai", "models", 500, b"x" * 1000)
    assert len(verdict.detail) < 250
    assert verdict.detail.endswith("...")


async def probe_with(
    handler: httpx.MockTransport, provider: ProviderSettings, how: ProviderProbeSettings
) -> tuple[ProbeResult, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler.handle_request(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as http:
        result = await Prober(http, ENVIRON, 0.5, "test", lambda: 42.0).probe(provider, how)
    return result, seen


async def test_openai_models_probe_sends_the_bearer_key() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=MODELS))
    result, seen = await probe_with(transport, OPENAI, ProviderProbeSettings())
    assert (seen[0].method, str(seen[0].url)) == ("GET", "https://api.example/v1/models")
    assert seen[0].headers["authorization"] == "Bearer sk-o"
    assert (result.ok, result.status, result.at) == (True, 200, 42.0)
    assert (result.mode, result.instance) == ("models", "test")


async def test_anthropic_probes_use_its_headers_and_messages_api() -> None:
    answer = json.dumps({"type": "message", "content": [{"type": "text", "text": "p"}]}).encode()
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=answer))
    how = ProviderProbeSettings(mode="completion", model="claude-x")
    result, seen = await probe_with(transport, ANTHROPIC, how)
    request = seen[0]
    assert (request.method, str(request.url)) == ("POST", "https://anthropic.example/v1/messages")
    assert request.headers["x-api-key"] == "sk-a"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    body = json.loads(request.content)
    assert (body["model"], body["max_tokens"]) == ("claude-x", 1)  # one token, never more
    assert result.ok


async def test_openai_completion_probe_asks_for_one_token() -> None:
    answer = b'{"choices": [{"message": {"content": "p"}}]}'
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=answer))
    how = ProviderProbeSettings(mode="completion", model="gpt-x")
    _, seen = await probe_with(transport, OPENAI, how)
    assert str(seen[0].url) == "https://api.example/v1/chat/completions"
    assert json.loads(seen[0].content)["max_tokens"] == 1


async def test_a_hanging_provider_times_out() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as http:
        result = await Prober(http, ENVIRON, 0.2, "t").probe(OPENAI, ProviderProbeSettings())
    assert (result.ok, result.status, result.detail) == (False, 0, "timed out after 0.2 s")
    assert 0.2 <= result.latency_s < 1.0


async def test_a_refused_connection_fails_with_the_error_kind() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    result, _ = await probe_with(httpx.MockTransport(refuse), OPENAI, ProviderProbeSettings())
    assert (result.ok, result.detail) == (False, "no answer: ConnectError")


BEDROCK = ProviderSettings(name="b", kind="bedrock", region="eu-west-1")


@pytest.mark.parametrize(
    ("mode", "status", "error_type", "body", "ok"),
    [
        ("models", 200, "", b'{"asyncInvokeSummaries": []}', True),
        ("models", 403, "AccessDeniedException", b'{"message": "not authorized"}', True),
        ("models", 403, "UnrecognizedClientException", b'{"message": "bad token"}', False),
        ("models", 200, "", b'{"data": []}', False),
        ("completion", 200, "", b'{"output": {"message": {"content": []}}}', True),
        ("completion", 200, "", b'{"output": {}}', False),
    ],
)
def test_bedrock_answers(mode: str, status: int, error_type: str, body: bytes, ok: bool) -> None:
    assert check_answer("bedrock", mode, status, body, error_type).ok is ok
