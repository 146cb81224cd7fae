"""Validation of OpenAI-style request bodies, before anything is sent upstream.

Like OpenAI, unknown arguments are refused (a typo such as `max_token` would otherwise be
silently ignored by some providers and honoured by others).
"""

from __future__ import annotations

from typing import Any

from llmproxy.router.errors import InvalidRequestError
from llmproxy.router.json_body import (
    FieldChecks,
    check_model,
    check_types,
    int_in,
    is_int,
    is_number,
    is_positive_int,
    load_object,
    number_in,
)

CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "n",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "response_format",
        "seed",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "service_tier",
        "store",
        "metadata",
        "modalities",
        "audio",
        "prediction",
        "reasoning_effort",
        "web_search_options",
        "verbosity",
        "prompt_cache_key",
        "safety_identifier",
    }
)
EMBEDDING_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
COMPLETION_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "suffix",
        "max_tokens",
        "temperature",
        "top_p",
        "n",
        "stream",
        "stream_options",
        "logprobs",
        "echo",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "best_of",
        "logit_bias",
        "user",
        "seed",
    }
)


_CHAT_TYPES: FieldChecks = {
    "stream": (lambda v: isinstance(v, bool), "a boolean"),
    "stream_options": (lambda v: isinstance(v, dict), "an object"),
    "temperature": (number_in(0, 2), "a number from 0 to 2"),
    "top_p": (number_in(0, 1), "a number from 0 to 1"),
    "n": (is_positive_int, "a positive integer"),
    "max_tokens": (is_positive_int, "a positive integer"),
    "max_completion_tokens": (is_positive_int, "a positive integer"),
    "stop": (
        lambda v: (
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v))
        ),
        "a string or an array of strings",
    ),
}


def _stop(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) for s in value)


def _logit_bias(value: Any) -> bool:
    return isinstance(value, dict) and all(
        k.isascii() and k.isdigit() and is_number(v) and -100 <= v <= 100 for k, v in value.items()
    )


def _stream_options(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("include_usage", False), bool)


# Legacy completions' optional fields, each with its check; null means the default, as in
# OpenAI's API. The ranges are OpenAI's.
_COMPLETION_TYPES: FieldChecks = {
    "suffix": (lambda v: isinstance(v, str), "a string"),
    "max_tokens": (lambda v: is_int(v) and v >= 0, "a non-negative integer"),
    "temperature": (number_in(0, 2), "a number from 0 to 2"),
    "top_p": (number_in(0, 1), "a number from 0 to 1"),
    "n": (int_in(1, 128), "an integer from 1 to 128"),
    "stream": (lambda v: isinstance(v, bool), "a boolean"),
    "stream_options": (_stream_options, "an object whose 'include_usage' is a boolean"),
    "logprobs": (int_in(0, 5), "an integer from 0 to 5"),
    "echo": (lambda v: isinstance(v, bool), "a boolean"),
    "stop": (_stop, "a string or an array of up to 4 strings"),
    "presence_penalty": (number_in(-2, 2), "a number from -2 to 2"),
    "frequency_penalty": (number_in(-2, 2), "a number from -2 to 2"),
    "best_of": (int_in(1, 20), "an integer from 1 to 20"),
    "logit_bias": (_logit_bias, "an object mapping token ids to numbers from -100 to 100"),
    "user": (lambda v: isinstance(v, str), "a string"),
    "seed": (is_int, "an integer"),
}


def _check_fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    for name in sorted(body):
        if name not in allowed:
            raise InvalidRequestError(
                f"Unrecognized request argument supplied: {name}",
                param=name,
                code="unknown_parameter",
            )


def _check_stream_options(body: dict[str, Any]) -> None:
    if body.get("stream_options") is not None and not body.get("stream"):
        raise InvalidRequestError(
            "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )


def parse_chat_request(raw: bytes) -> dict[str, Any]:
    """Parse and check a chat completion body; raise InvalidRequestError saying what is wrong."""
    body = load_object(raw)
    _check_fields(body, CHAT_FIELDS)
    check_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError(
            "'messages' is required and must be a non-empty array.", param="messages"
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequestError(
                f"messages[{index}] must be an object with a string 'role'.",
                param=f"messages[{index}]",
            )
    check_types(body, _CHAT_TYPES)
    _check_stream_options(body)
    return body


def _token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(is_int(t) and t >= 0 for t in value)


def _valid_input(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(v, str) for v in value):
        return True
    if _token_ids(value):
        return True  # one input as token ids
    return all(isinstance(v, list) and v and all(is_int(t) for t in v) for v in value)


def parse_embeddings_request(raw: bytes) -> dict[str, Any]:
    """Parse and check an embeddings body."""
    body = load_object(raw)
    _check_fields(body, EMBEDDING_FIELDS)
    check_model(body)
    if not _valid_input(body.get("input")):
        raise InvalidRequestError(
            "'input' is required: a non-empty string, array of strings, or token arrays.",
            param="input",
        )
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise InvalidRequestError(
            "'encoding_format' must be 'float' or 'base64'.", param="encoding_format"
        )
    if "dimensions" in body and not is_positive_int(body["dimensions"]):
        raise InvalidRequestError("'dimensions' must be a positive integer.", param="dimensions")
    return body


def _valid_prompt(value: Any) -> bool:
    if value is None or isinstance(value, str):
        return True  # null: OpenAI completes from the start of a document
    if not isinstance(value, list) or not value:
        return False
    return (
        all(isinstance(v, str) for v in value)
        or _token_ids(value)
        or all(_token_ids(v) for v in value)
    )


def parse_completions_request(raw: bytes) -> dict[str, Any]:
    """Parse and check a legacy completions body (POST /v1/completions); raise
    InvalidRequestError naming the field that is wrong."""
    body = load_object(raw)
    _check_fields(body, COMPLETION_FIELDS)
    check_model(body)
    if "prompt" not in body or not _valid_prompt(body["prompt"]):
        raise InvalidRequestError(
            "'prompt' is required: a string, an array of strings, an array of token ids, or an"
            " array of token id arrays.",
            param="prompt",
        )
    check_types(body, _COMPLETION_TYPES)
    _check_stream_options(body)
    best_of = body.get("best_of")
    if best_of is not None:
        if best_of < (body.get("n") or 1):
            raise InvalidRequestError("'best_of' must be at least 'n'.", param="best_of")
        if best_of > 1 and body.get("stream"):
            raise InvalidRequestError(
                "'best_of' greater than 1 cannot be streamed.", param="best_of"
            )
    return body
