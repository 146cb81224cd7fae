"""Deterministic answers of the fake provider, as pure functions of the request.

The same request always gets the same text, ids, token counts and vectors, so tests
can assert on them and usage stays consistent between streamed and whole answers.
Only ``created`` timestamps come from the caller. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]
"""A JSON object, ready for `json.dumps`."""

DEFAULT_MODELS: tuple[str, ...] = ("fake-gpt", "fake-claude", "fake-embed")
"""Model ids served when none are configured."""

MODELS_CREATED = 1_700_000_000
"""Fixed ``created`` of every listed model, so the models list never changes."""

EMBEDDING_DIMENSIONS = 8
"""Length of every embedding vector."""

ANSWER_PREFIX = "This is a fake answer to: "
"""Start of every completion; the rest is the start of the last user message."""

_QUOTED_CHARS = 60
_WORDS_PER_CHUNK = 3
_WORD = re.compile(r"\S+\s*")


@dataclass(frozen=True)
class Message:
    """One message of a conversation, reduced to its role and its text parts."""

    role: str
    text: str


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request, OpenAI's or Anthropic's (whose system prompt is a message)."""

    model: str
    messages: tuple[Message, ...]
    max_tokens: int | None = None
    include_usage: bool = False
    tool: str | None = None
    """The function the fake calls: the first one offered, until a tool result comes back."""
    cached_tokens: int = 0
    """Prompt tokens to report as read from a prompt cache (the cached_prompt_tokens knob)."""


@dataclass(frozen=True)
class Answer:
    """The completion for a request and its token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    truncated: bool
    """True when ``max_tokens`` cut the text short."""
    cached_tokens: int = 0
    """The part of ``prompt_tokens`` reported as read from a prompt cache."""

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


def count_tokens(text: str) -> int:
    """The fake tokenizer: whitespace-separated words, at least 1."""
    return max(1, len(text.split()))


def answer(request: ChatRequest) -> Answer:
    """The completion for `request`: a fixed prefix quoting the last user message."""
    last_user = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
    words = _WORD.findall(ANSWER_PREFIX + last_user[:_QUOTED_CHARS].strip())
    truncated = request.max_tokens is not None and len(words) > request.max_tokens
    if truncated:
        words = words[: request.max_tokens]
    text = "".join(words).rstrip()
    prompt = count_tokens(" ".join(m.text for m in request.messages))
    return Answer(
        text=text,
        prompt_tokens=prompt,
        completion_tokens=count_tokens(text),
        truncated=truncated,
        cached_tokens=min(request.cached_tokens, prompt),
    )


def text_pieces(text: str) -> list[str]:
    """`text` cut into stream deltas of a few words; joined, they give `text` back."""
    words = _WORD.findall(text)
    return [
        "".join(words[i : i + _WORDS_PER_CHUNK]) for i in range(0, len(words), _WORDS_PER_CHUNK)
    ]


def _digest(*parts: object) -> str:
    canonical = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(canonical.encode()).hexdigest()


def request_digest(request: ChatRequest) -> str:
    """A short digest of what the answer depends on: its ids are made from it."""
    return _digest(request.model, [(m.role, m.text) for m in request.messages], request.max_tokens)[
        :24
    ]


# --- OpenAI -------------------------------------------------------------------------


def openai_error(
    message: str,
    *,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> JSON:
    """An error body in OpenAI's shape."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def models_list(models: Sequence[str]) -> JSON:
    """The ``GET /v1/models`` body for `models`."""
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": MODELS_CREATED, "owned_by": "llmproxy-fake"}
            for model in models
        ],
    }


def tool_arguments(request: ChatRequest) -> str:
    """The JSON arguments of the fake's tool call: the last user message as `query`."""
    last_user = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
    return json.dumps({"query": last_user})


def _tool_call(request: ChatRequest) -> JSON:
    return {
        "id": f"call_{request_digest(request)[:12]}",
        "type": "function",
        "function": {"name": request.tool, "arguments": tool_arguments(request)},
    }


def tool_answer(request: ChatRequest) -> Answer:
    """The fake's tool call as an Answer: its arguments as the text, with their token counts."""
    arguments = tool_arguments(request)
    prompt = count_tokens(" ".join(m.text for m in request.messages))
    cached = min(request.cached_tokens, prompt)
    return Answer(arguments, prompt, count_tokens(arguments), False, cached)


def head(object_id: str, kind: str, created: int, model: str) -> JSON:
    """The fields an answer object or chunk opens with: id, object, created, model and the
    fake's system_fingerprint."""
    return {
        "id": object_id,
        "object": kind,
        "created": created,
        "model": model,
        "system_fingerprint": "fp_llmproxy_fake",
    }


def chat_completion(request: ChatRequest, *, created: int) -> JSON:
    """The non-streamed ``chat.completion`` object for `request`."""
    message: JSON = {"role": "assistant", "content": None, "refusal": None}
    if request.tool is not None:
        message["tool_calls"] = [_tool_call(request)]
        result = tool_answer(request)
        finish_reason = "tool_calls"
    else:
        result = answer(request)
        message["content"] = result.text
        finish_reason = "length" if result.truncated else "stop"
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
    return {
        **head(f"chatcmpl-{request_digest(request)}", "chat.completion", created, request.model),
        "choices": [choice],
        "usage": _openai_usage(result),
    }


def chat_completion_chunks(request: ChatRequest, *, created: int) -> list[JSON]:
    """The ``chat.completion.chunk`` objects of a streamed answer, in order.

    A role chunk, content chunks of a few words, a chunk with the finish reason and,
    if the request asked for it, a last chunk with empty choices and the usage.
    """
    result = answer(request)
    base = head(
        f"chatcmpl-{request_digest(request)}", "chat.completion.chunk", created, request.model
    )
    if request.include_usage:
        # OpenAI sends an explicit null usage on every chunk but the last when asked.
        base["usage"] = None

    def chunk(delta: JSON, finish_reason: str | None = None) -> JSON:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    if request.tool is not None:
        # The call's id and name first, then its arguments in two pieces, as OpenAI streams.
        result = tool_answer(request)
        call = _tool_call(request)
        half = len(result.text) // 2
        chunks.append(
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, **call, "function": {**call["function"], "arguments": ""}}
                    ]
                }
            )
        )
        for piece in (result.text[:half], result.text[half:]):
            chunks.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        chunks.append(chunk({}, "tool_calls"))
    else:
        chunks += [chunk({"content": piece}) for piece in text_pieces(result.text)]
        chunks.append(chunk({}, "length" if result.truncated else "stop"))
    if request.include_usage:
        chunks.append({**base, "choices": [], "usage": _openai_usage(result)})
    return chunks


def _openai_usage(result: Answer) -> JSON:
    usage: JSON = {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.total_tokens,
    }
    if result.cached_tokens:  # prompt_tokens counts them too
        usage["prompt_tokens_details"] = {"cached_tokens": result.cached_tokens}
    return usage


def embedding_vector(text: str) -> list[float]:
    """A unit vector of `EMBEDDING_DIMENSIONS` floats derived from a hash of `text`.

    The values are exactly representable as float32, so the ``base64`` encoding (packed
    float32, which the openai SDK asks for by default) decodes to the same numbers.
    """
    raw = hashlib.sha256(text.encode()).digest()
    values = [b / 127.5 - 1.0 for b in raw[:EMBEDDING_DIMENSIONS]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{EMBEDDING_DIMENSIONS}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{EMBEDDING_DIMENSIONS}f", packed))


def embeddings(model: str, inputs: Sequence[str], *, encoding_format: str = "float") -> JSON:
    """The ``POST /v1/embeddings`` body: one vector per input, as floats or base64."""
    data: list[JSON] = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(text)
        encoded: list[float] | str = vector
        if encoding_format == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(count_tokens(text) for text in inputs)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def sse_data(payload: JSON | str) -> bytes:
    """One OpenAI server-sent event: ``data: <json>`` (or a literal like ``[DONE]``)."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()
