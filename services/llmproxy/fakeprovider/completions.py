"""The fake provider's legacy completions (OpenAI's ``text_completion``), as pure functions.

Each prompt is answered as the chat fake answers a user message with its text (a prompt of
token ids reads as the ids, space-separated), so texts and token counts match the chat fake's;
``n`` copies of each, indexed prompt by prompt as OpenAI does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from llmproxy.fakeprovider.responses import (
    JSON,
    Answer,
    ChatRequest,
    Message,
    answer,
    count_tokens,
    head,
    text_pieces,
)
from llmproxy.fakeprovider.validation import RequestError, get_field, stream_flags

DEFAULT_MAX_TOKENS = 16
"""OpenAI's default ``max_tokens`` for legacy completions."""


@dataclass(frozen=True)
class CompletionRequest:
    """A validated legacy completions request."""

    model: str
    prompts: tuple[str, ...]
    max_tokens: int = DEFAULT_MAX_TOKENS
    n: int = 1
    echo: bool = False
    include_usage: bool = False


def _prompt_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(_token(t) for t in value):
        return " ".join(str(t) for t in value)
    return None


def _token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _prompts(raw: str | list[Any]) -> tuple[str, ...]:
    """The prompts of a body: one string, strings, one token array, or token arrays."""
    if isinstance(raw, str):
        return (raw,)
    if raw and all(_token(t) for t in raw):
        return (" ".join(str(t) for t in raw),)
    texts = [_prompt_text(item) for item in raw]
    if not raw or any(text is None for text in texts):
        message = (
            "Invalid prompt: expected a string, an array of strings, an array of tokens, or an"
            " array of token arrays."
        )
        raise RequestError(400, message, param="prompt", code="invalid_value")
    return tuple(text for text in texts if text is not None)


def _count(body: dict[str, Any], name: str, default: int, least: int) -> int:
    value: int | None = get_field(body, name, int)
    if value is None:
        return default
    if value < least:
        raise RequestError(400, f"'{name}' must be at least {least}, got {value}.", param=name)
    return value


def parse_completion(body: dict[str, Any]) -> tuple[CompletionRequest, bool]:
    """The request of a ``POST /v1/completions`` body, and whether it streams."""
    model = get_field(body, "model", str, required=True)
    prompts = _prompts(get_field(body, "prompt", (str, list), required=True))
    stream, include_usage = stream_flags(body)
    request = CompletionRequest(
        model,
        prompts,
        max_tokens=_count(body, "max_tokens", DEFAULT_MAX_TOKENS, 0),
        n=_count(body, "n", 1, 1),
        echo=get_field(body, "echo", bool) or False,
        include_usage=include_usage,
    )
    return request, stream


def _answers(request: CompletionRequest) -> list[tuple[str, Answer]]:
    """(prompt, answer) of every choice, in choice index order."""
    found = []
    for prompt in request.prompts:
        chat = ChatRequest(request.model, (Message("user", prompt),), request.max_tokens)
        found += [(prompt, answer(chat))] * request.n
    return found


def _text(request: CompletionRequest, prompt: str, result: Answer) -> str:
    return prompt + result.text if request.echo else result.text


def _finish(result: Answer) -> str:
    return "length" if result.truncated else "stop"


def _usage(request: CompletionRequest) -> JSON:
    prompt = sum(count_tokens(p) for p in request.prompts)
    completion = sum(result.completion_tokens for _, result in _answers(request))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _head(request: CompletionRequest, created: int) -> JSON:
    return head(f"cmpl-{_digest(request)}", "text_completion", created, request.model)


def _digest(request: CompletionRequest) -> str:
    canonical = json.dumps([request.model, request.prompts, request.max_tokens, request.n])
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def text_completion(request: CompletionRequest, *, created: int) -> JSON:
    """The non-streamed ``text_completion`` object for `request`."""
    choices = [
        {
            "index": index,
            "text": _text(request, prompt, result),
            "logprobs": None,
            "finish_reason": _finish(result),
        }
        for index, (prompt, result) in enumerate(_answers(request))
    ]
    return {**_head(request, created), "choices": choices, "usage": _usage(request)}


def text_completion_chunks(request: CompletionRequest, *, created: int) -> list[JSON]:
    """The streamed ``text_completion`` chunks of `request`, in order.

    Per choice: its text in pieces of a few words (the echoed prompt first), then an empty
    text with the finish reason; if the request asked for it, a last chunk with empty
    choices and the usage (every other chunk then carries ``"usage": null``, as OpenAI's do).
    """
    base = _head(request, created)
    if request.include_usage:
        base["usage"] = None

    def chunk(index: int, text: str, finish_reason: str | None = None) -> JSON:
        choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    chunks = []
    for index, (prompt, result) in enumerate(_answers(request)):
        pieces = ([prompt] if request.echo and prompt else []) + text_pieces(result.text)
        chunks += [chunk(index, piece) for piece in pieces]
        chunks.append(chunk(index, "", _finish(result)))
    if request.include_usage:
        chunks.append({**base, "choices": [], "usage": _usage(request)})
    return chunks
