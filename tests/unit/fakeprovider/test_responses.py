"""The pure answer builders: deterministic, self-consistent, shaped like the real APIs."""

from __future__ import annotations

import base64
import math
import struct

from llmproxy.fakeprovider import anthropic, responses
from llmproxy.fakeprovider.responses import ChatRequest, Message

REQUEST = ChatRequest(
    model="fake-gpt",
    messages=(
        Message("system", "You are terse."),
        Message("user", "First question"),
        Message("assistant", "First answer"),
        Message("user", "What is   the capital of France, and why is it that city?"),
    ),
)


def test_answer_quotes_the_last_user_message() -> None:
    result = responses.answer(REQUEST)

    assert (
        result.text
        == "This is a fake answer to: What is   the capital of France, and why is it that city?"
    )
    assert result.completion_tokens == len(result.text.split())
    assert result.prompt_tokens == 3 + 2 + 2 + 12
    assert not result.truncated


def test_answer_quotes_at_most_60_characters() -> None:
    long = ChatRequest("fake-gpt", (Message("user", "x" * 200),))

    assert responses.answer(long).text == responses.ANSWER_PREFIX + "x" * 60


def test_token_count_is_at_least_one() -> None:
    assert responses.count_tokens("") == 1
    assert responses.count_tokens("  a b\nc ") == 3


def test_max_tokens_truncates_and_says_so() -> None:
    short = ChatRequest(REQUEST.model, REQUEST.messages, max_tokens=4)

    result = responses.answer(short)

    assert result.text == "This is a fake"
    assert result.completion_tokens == 4
    assert responses.chat_completion(short, created=1)["choices"][0]["finish_reason"] == "length"
    assert anthropic.message(short)["stop_reason"] == "max_tokens"


def test_chat_completion_is_deterministic_and_consistent() -> None:
    first = responses.chat_completion(REQUEST, created=123)
    again = responses.chat_completion(REQUEST, created=123)
    other = responses.chat_completion(ChatRequest("fake-claude", REQUEST.messages), created=123)

    assert first == again
    assert first["id"].startswith("chatcmpl-")
    assert other["id"] != first["id"]
    assert first["object"] == "chat.completion"
    assert first["model"] == "fake-gpt"
    assert first["choices"][0]["message"]["role"] == "assistant"
    usage = first["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_stream_chunks_rebuild_the_whole_answer() -> None:
    request = ChatRequest(REQUEST.model, REQUEST.messages, include_usage=True)
    whole = responses.chat_completion(request, created=5)

    chunks = responses.chat_completion_chunks(request, created=5)

    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert {chunk["id"] for chunk in chunks} == {whole["id"]}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == whole["usage"]
    assert len(chunks) > 4  # several content pieces, not one


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    chunks = responses.chat_completion_chunks(REQUEST, created=5)

    assert all(chunk["choices"] for chunk in chunks)
    assert all("usage" not in chunk for chunk in chunks)


def test_embedding_vectors_are_deterministic_unit_float32_vectors() -> None:
    vector = responses.embedding_vector("hello")

    assert vector == responses.embedding_vector("hello")
    assert vector != responses.embedding_vector("hello!")
    assert len(vector) == responses.EMBEDDING_DIMENSIONS
    assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-5)
    assert list(struct.unpack("<8f", struct.pack("<8f", *vector))) == vector


def test_embeddings_base64_decodes_to_the_float_vector() -> None:
    floats = responses.embeddings("fake-embed", ["a b", "c"])
    packed = responses.embeddings("fake-embed", ["a b", "c"], encoding_format="base64")

    for as_floats, as_base64 in zip(floats["data"], packed["data"], strict=True):
        decoded = struct.unpack("<8f", base64.b64decode(as_base64["embedding"]))
        assert list(decoded) == as_floats["embedding"]
    assert floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert [item["index"] for item in floats["data"]] == [0, 1]


def test_models_list_shape() -> None:
    body = responses.models_list(["a", "b"])

    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["a", "b"]
    assert {m["owned_by"] for m in body["data"]} == {"llmproxy-fake"}


def test_anthropic_events_follow_the_messages_stream_protocol() -> None:
    events = anthropic.events(REQUEST)
    kinds = [kind for kind, _ in events]
    whole = anthropic.message(REQUEST)

    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert all(kind == data["type"] for kind, data in events)
    deltas = "".join(
        data["delta"]["text"] for kind, data in events if kind == "content_block_delta"
    )
    assert deltas == whole["content"][0]["text"]
    assert events[-2][1]["usage"]["output_tokens"] == whole["usage"]["output_tokens"]


def test_sse_framing() -> None:
    assert responses.sse_data("[DONE]") == b"data: [DONE]\n\n"
    assert responses.sse_data({"a": 1}) == b'data: {"a":1}\n\n'
    assert (
        anthropic.sse_event("ping", {"type": "ping"}) == b'event: ping\ndata: {"type":"ping"}\n\n'
    )
