"""The Azure OpenAI and Gemini routes: their key checks, answers, streams and error shapes."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.harness.fake_provider import RunningProvider

AZURE = "/openai/deployments/fake-gpt/chat/completions?api-version=2024-10-21"
CHAT = {"messages": [{"role": "user", "content": "Hi there"}]}
GEMINI = "/v1beta/models/fake-gpt"
CONTENTS = {"contents": [{"role": "user", "parts": [{"text": "Hi there"}]}]}
GEMINI_KEY = {"x-goog-api-key": "k"}


async def test_azure_answers_as_the_deployment(http: httpx.AsyncClient) -> None:
    response = await http.post(AZURE, json={**CHAT, "model": "other"}, headers={"api-key": "k"})
    assert response.status_code == 200
    assert response.json()["model"] == "fake-gpt"
    assert (
        response.json()["choices"][0]["message"]["content"] == "This is a fake answer to: Hi there"
    )


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        (AZURE, {}, 401),
        (AZURE.split("?", maxsplit=1)[0], {"api-key": "k"}, 404),
        ("/openai/deployments/nope/chat/completions?api-version=1", {"api-key": "k"}, 404),
    ],
)
async def test_azure_refusals_in_openai_shape(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], status: int
) -> None:
    response = await http.post(path, json=CHAT, headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["message"]


async def test_azure_models_list(http: httpx.AsyncClient) -> None:
    response = await http.get("/openai/models?api-version=1", headers={"api-key": "k"})
    assert [m["id"] for m in response.json()["data"]] == ["fake-gpt", "fake-claude", "fake-embed"]


async def test_gemini_generate_content(http: httpx.AsyncClient) -> None:
    body = {**CONTENTS, "generationConfig": {"maxOutputTokens": 3}}
    response = await http.post(f"{GEMINI}:generateContent", json=body, headers=GEMINI_KEY)
    answer = response.json()
    candidate = answer["candidates"][0]
    assert candidate["content"] == {"role": "model", "parts": [{"text": "This is a"}]}
    assert candidate["finishReason"] == "MAX_TOKENS"
    assert answer["usageMetadata"] == {
        "promptTokenCount": 2,
        "candidatesTokenCount": 3,
        "totalTokenCount": 5,
    }


async def test_gemini_stream_is_sse_with_the_finish_reason_last(http: httpx.AsyncClient) -> None:
    path = f"{GEMINI}:streamGenerateContent?alt=sse"
    response = await http.post(path, json=CONTENTS, headers=GEMINI_KEY)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in response.text.split("\n") if line]
    text = "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events)
    assert text == "This is a fake answer to: Hi there"
    assert [e["candidates"][0].get("finishReason") for e in events][-2:] == [None, "STOP"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (CONTENTS, {}, 403, "PERMISSION_DENIED"),
        ({**CONTENTS, "temperature": 1}, GEMINI_KEY, 400, "INVALID_ARGUMENT"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, GEMINI_KEY, 400, None),
        ({"contents": [{"role": "user", "parts": []}]}, GEMINI_KEY, 400, None),
    ],
)
async def test_gemini_refusals_in_gemini_shape(
    http: httpx.AsyncClient,
    body: dict[str, object],
    headers: dict[str, str],
    status: int,
    code: str | None,
) -> None:
    response = await http.post(f"{GEMINI}:generateContent", json=body, headers=headers)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == status
    assert error["status"] == (code or "INVALID_ARGUMENT")


async def test_knobs_apply_to_gemini_and_azure(
    http: httpx.AsyncClient, provider: RunningProvider
) -> None:
    provider.knobs.error_rate, provider.knobs.error_status = 1.0, 429
    gemini = await http.post(f"{GEMINI}:generateContent", json=CONTENTS, headers=GEMINI_KEY)
    azure = await http.post(AZURE, json=CHAT, headers={"api-key": "k"})
    assert (gemini.status_code, gemini.json()["error"]["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert azure.status_code == 429
    assert (await provider.stats())["injected_errors"] == {"error_rate": 2}
