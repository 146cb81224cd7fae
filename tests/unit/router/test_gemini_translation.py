"""OpenAI chat to Gemini and back: requests, answers, stream chunks, errors; Azure's paths."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from llmproxy.router.providers import Provider, ProviderCallError, client_for, sse
from llmproxy.router.providers.base import UnsupportedError
from llmproxy.router.providers.gemini import ChunkWriter, to_chat_completion
from llmproxy.router.providers.gemini_request import to_batch_embed_request, to_gemini_request

TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
}


def test_request_system_roles_sampling_and_json_mode() -> None:
    request = to_gemini_request(
        {
            "model": "gemini-2.5-flash",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Weather?"},
            ],
            "temperature": 0.2,
            "top_p": 0.9,
            "max_tokens": 64,
            "stop": "END",
            "response_format": {"type": "json_object"},
            "user": "ignored",
        }
    )
    assert request == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello."}]},
            {"role": "user", "parts": [{"text": "Weather?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {
            "temperature": 0.2,
            "topP": 0.9,
            "maxOutputTokens": 64,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
        },
    }


def test_request_json_schema_becomes_response_json_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = to_gemini_request(
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": schema},
            },
        }
    )
    assert request["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


def test_request_tools_calls_and_their_results() -> None:
    request = to_gemini_request(
        {
            "messages": [
                {"role": "user", "content": "Weather in Oslo and Bergen?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        CALL,
                        {
                            **CALL,
                            "id": "call_2",
                            "function": {"name": "weather", "arguments": '{"city":"Bergen"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": '{"c": 3}'},
                {"role": "tool", "tool_call_id": "call_2", "content": "mild"},
            ],
            "tools": [TOOL],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
        }
    )
    assert request["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "weather",
                    "description": "The weather in a city.",
                    "parametersJsonSchema": TOOL["function"]["parameters"],  # type: ignore[index]
                }
            ]
        }
    ]
    assert request["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}
    }
    model_turn, answers = request["contents"][1:]
    assert model_turn == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}},
            {"functionCall": {"name": "weather", "args": {"city": "Bergen"}}},
        ],
    }
    # Both results in one turn, each by its call's function name.
    assert answers == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "weather", "response": {"c": 3}}},
            {"functionResponse": {"name": "weather", "response": {"result": "mild"}}},
        ],
    }


@pytest.mark.parametrize(
    ("choice", "mode"), [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")]
)
def test_tool_choice_modes(choice: str, mode: str) -> None:
    request = to_gemini_request({"messages": [], "tools": [TOOL], "tool_choice": choice})
    assert request["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


def test_images_as_data_urls_become_inline_data() -> None:
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    request = to_gemini_request({"messages": [{"role": "user", "content": [part]}]})
    assert request["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    ]


@pytest.mark.parametrize(
    ("body", "feature"),
    [
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"logprobs": True}, "logprobs"),
        ({"functions": [{"name": "f"}]}, "legacy `functions`"),
        ({"tools": [{"type": "web_search"}]}, "tools of type 'web_search'"),
        ({"response_format": {"type": "grammar"}}, "response_format 'grammar'"),
        ({"modalities": ["text", "audio"]}, "output modalities"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            },
            "image_url parts other than base64 data: URLs",
        ),
        ({"messages": [{"role": "function", "content": "x"}]}, "'function' messages"),
    ],
)
def test_unsupported_features_are_refused_by_name(body: dict[str, Any], feature: str) -> None:
    with pytest.raises(UnsupportedError) as raised:
        to_gemini_request({"messages": [], **body})
    assert feature in str(raised.value)
    assert raised.value.status == 400


def test_a_tool_result_without_its_call_is_refused() -> None:
    with pytest.raises(UnsupportedError, match="answers no earlier tool call"):
        to_gemini_request({"messages": [{"role": "tool", "tool_call_id": "x", "content": "1"}]})


def test_embeddings_request() -> None:
    assert to_batch_embed_request(
        {"model": "text-embedding-004", "input": "hi", "dimensions": 8}
    ) == {
        "requests": [
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": "hi"}]},
                "outputDimensionality": 8,
            }
        ]
    }
    with pytest.raises(UnsupportedError, match="token arrays"):
        to_batch_embed_request({"model": "m", "input": [[1, 2]]})


USAGE = {
    "promptTokenCount": 10,
    "candidatesTokenCount": 5,
    "thoughtsTokenCount": 7,
    "cachedContentTokenCount": 4,
    "totalTokenCount": 22,
}


def test_answer_text_usage_and_finish() -> None:
    answer = to_chat_completion(
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"text": "thinking...", "thought": True},
                            {"text": "Hi "},
                            {"text": "there"},
                        ],
                    },
                    "finishReason": "MAX_TOKENS",
                    "index": 0,
                }
            ],
            "usageMetadata": USAGE,
            "modelVersion": "gemini-2.5-flash-001",
            "responseId": "abc",
        },
        "gemini-2.5-flash",
    )
    assert answer["id"] == "chatcmpl-abc"
    assert answer["model"] == "gemini-2.5-flash-001"
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi there"},
            "finish_reason": "length",
        }
    ]
    # Thinking tokens are billed as output: they count as completion tokens.
    assert answer["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 12,
        "total_tokens": 22,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 7},
    }


def test_answer_function_call_becomes_tool_calls() -> None:
    answer = to_chat_completion(
        {
            "candidates": [
                {
                    "content": {
                        "parts": [{"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}]
                    },
                    "finishReason": "STOP",
                }
            ]
        },
        "m",
    )
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["function"] == {"name": "weather", "arguments": '{"city":"Oslo"}'}


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(reason: str, expected: str) -> None:
    answer = to_chat_completion(
        {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}, "m"
    )
    assert answer["choices"][0]["finish_reason"] == expected


def test_a_blocked_prompt_is_a_filtered_answer() -> None:
    answer = to_chat_completion(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}, "m"
    )
    assert answer["choices"][0]["finish_reason"] == "content_filter"
    assert answer["usage"]["prompt_tokens"] == 3


def _events(writer: ChunkWriter, *payloads: dict[str, Any]) -> list[Any]:
    out = [chunk for payload in payloads for chunk in writer.translate(payload)] + writer.end()
    return [sse.data_json(e) if e != sse.DONE else "[DONE]" for e in out]


def test_stream_chunks_end_with_usage_and_done() -> None:
    def piece(text: str, **extra: Any) -> dict[str, Any]:
        candidate = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0, **extra}
        return {
            "candidates": [candidate],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1},
            "responseId": "r1",
        }

    events = _events(
        ChunkWriter("m"),
        piece("Hel"),
        piece("lo", finishReason="STOP")
        | {"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2}},
    )
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["id"] for c in chunks} == {"chatcmpl-r1"}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_stream_tool_calls_are_numbered_across_chunks() -> None:
    def call(city: str, **extra: Any) -> dict[str, Any]:
        part = {"functionCall": {"name": "weather", "args": {"city": city}}}
        return {"candidates": [{"content": {"parts": [part]}, **extra}]}

    events = _events(ChunkWriter("m"), call("Oslo"), call("Bergen", finishReason="STOP"))
    calls = [
        tc
        for e in events[:-1]
        if e["choices"]
        for tc in e["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert [(c["index"], json.loads(c["function"]["arguments"])) for c in calls] == [
        (0, {"city": "Oslo"}),
        (1, {"city": "Bergen"}),
    ]
    finishes = [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"]]
    assert finishes[-1] == "tool_calls"


def test_a_cut_stream_does_not_look_whole() -> None:
    writer = ChunkWriter("m")
    writer.translate({"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]})
    assert writer.end() == []


def test_a_stream_error_event_fails_the_stream() -> None:
    with pytest.raises(ProviderCallError, match="RESOURCE_EXHAUSTED") as raised:
        ChunkWriter("m").translate(
            {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow"}}
        )
    assert raised.value.retryable is False


# --- the clients over a mock transport: error mapping, headers, paths ----------------------


def _client(kind: str, handler: Any, api_version: str | None = None) -> Any:
    transport = httpx.MockTransport(handler)
    return client_for(
        transport, Provider("p", kind, "https://x.example/v1beta", "sk", 5.0, api_version)
    )


def _gemini_error(status: int, name: str, reason: str | None = None) -> bytes:
    details = (
        [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}] if reason else []
    )
    return json.dumps(
        {
            "error": {
                "code": status,
                "message": f"{name} happened",
                "status": name,
                "details": details,
            }
        }
    ).encode()


@pytest.mark.parametrize(
    ("status", "name", "reason", "expected", "retryable"),
    [
        (429, "RESOURCE_EXHAUSTED", None, 429, True),
        (500, "INTERNAL", None, 500, True),
        (503, "UNAVAILABLE", None, 503, True),
        (400, "INVALID_ARGUMENT", None, 400, False),
        (400, "INVALID_ARGUMENT", "API_KEY_INVALID", 401, False),
        (403, "PERMISSION_DENIED", None, 403, False),
    ],
)
async def test_gemini_errors_map_to_openai_errors(
    status: int, name: str, reason: str | None, expected: int, retryable: bool
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, content=_gemini_error(status, name, reason), headers={"retry-after": "2"}
        )

    client = _client("gemini", handler)
    for call in (client.chat, client.open_chat_stream):
        with pytest.raises(ProviderCallError) as raised:
            await call(
                {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}]}
            )
        assert (raised.value.status, raised.value.retryable) == (expected, retryable)
        assert raised.value.retry_after_s == 2.0
        error = json.loads(raised.value.body)["error"]
        assert error["message"] == f"{name} happened"
        assert error["type"] == ("server_error" if expected >= 500 else "invalid_request_error")


async def test_gemini_request_line_and_key_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={"candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}]},
        )

    client = _client("gemini", handler)
    await client.chat(
        {"model": "models/gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}]}
    )
    (request,) = seen
    assert str(request.url) == "https://x.example/v1beta/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == "sk"
    assert "authorization" not in request.headers


@pytest.mark.parametrize(
    ("status", "retryable"), [(429, True), (500, True), (400, False), (401, False)]
)
async def test_azure_paths_key_header_and_error_mapping(status: int, retryable: bool) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json={"error": {"code": str(status), "message": "no"}})

    client = _client("azure", handler, api_version="2024-10-21")
    with pytest.raises(ProviderCallError) as raised:
        await client.chat({"model": "my deploy/1", "messages": []})
    assert (raised.value.status, raised.value.retryable) == (status, retryable)
    with pytest.raises(ProviderCallError):
        await client.embeddings({"model": "emb", "input": "x"})
    chat, embed = seen
    # The deployment name stays one path segment, whatever it holds.
    assert (
        chat.url.raw_path
        == b"/v1beta/openai/deployments/my%20deploy%2F1/chat/completions?api-version=2024-10-21"
    )
    assert embed.url.raw_path == b"/v1beta/openai/deployments/emb/embeddings?api-version=2024-10-21"
    assert chat.headers["api-key"] == "sk"
    assert "authorization" not in chat.headers
