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


AZURE = ProviderSettings(
    name="az",
    kind="azure",
    base_url="https://res.openai.azure.com",
    api_key_env="AZ_KEY",
    api_version="2024-10-21",
)
GEMINI = ProviderSettings(
    name="gm",
    kind="gemini",
    base_url="https://generativelanguage.googleapis.com/v1beta",
    api_key_env="GM_KEY",
)
KEYS = {"AZ_KEY": "sk-az", "GM_KEY": "sk-gm"}


async def _probe(
    provider: ProviderSettings, how: ProviderProbeSettings, answer: bytes
) -> tuple[ProbeResult, httpx.Request]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=answer)

    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as http:
        result = await Prober(http, KEYS, 0.5, "test").probe(provider, how)
    return result, seen[0]


async def test_azure_probes_list_models_with_api_version_and_api_key() -> None:
    result, request = await _probe(AZURE, ProviderProbeSettings(), MODELS)
    assert (request.method, str(request.url)) == (
        "GET",
        "https://res.openai.azure.com/openai/models?api-version=2024-10-21",
    )
    assert request.headers["api-key"] == "sk-az"
    assert "authorization" not in request.headers
    assert (result.ok, result.detail) == (True, "2 models listed")


async def test_azure_completion_probe_calls_the_deployment() -> None:
    how = ProviderProbeSettings(mode="completion", model="my-gpt")
    result, request = await _probe(AZURE, how, b'{"choices": [{"message": {"content": "p"}}]}')
    assert str(request.url) == (
        "https://res.openai.azure.com/openai/deployments/my-gpt/chat/completions"
        "?api-version=2024-10-21"
    )
    assert json.loads(request.content)["max_tokens"] == 1
    assert result.ok


async def test_gemini_probes_list_models_with_its_key_header() -> None:
    listed = json.dumps({"models": [{"name": "models/gemini-2.5-flash"}]}).encode()
    result, request = await _probe(GEMINI, ProviderProbeSettings(), listed)
    assert str(request.url) == "https://generativelanguage.googleapis.com/v1beta/models"
    assert request.headers["x-goog-api-key"] == "sk-gm"
    assert "authorization" not in request.headers
    assert (result.ok, result.detail) == (True, "1 models listed")


async def test_gemini_completion_probe_asks_generate_content_for_one_token() -> None:
    how = ProviderProbeSettings(mode="completion", model="gemini-2.5-flash")
    answer = b'{"candidates": [{"finishReason": "MAX_TOKENS"}]}'
    result, request = await _probe(GEMINI, how, answer)
    assert str(request.url).endswith("/v1beta/models/gemini-2.5-flash:generateContent")
    assert json.loads(request.content)["generationConfig"] == {"maxOutputTokens": 1}
    assert result.ok


@pytest.mark.parametrize(
    ("mode", "body", "detail"),
    [
        ("models", b'{"data": []}', "no `models` list in the model list"),
        ("models", b'{"models": [{"id": "x"}]}', "model list entry 0 has no string `name`"),
        ("completion", b'{"candidates": []}', "no `candidates` in the answer"),
    ],
)
def test_gemini_answers_of_the_wrong_shape_fail(mode: str, body: bytes, detail: str) -> None:
    verdict = check_answer("gemini", mode, 200, body)
    assert (verdict.ok, verdict.detail) == (False, detail)


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
