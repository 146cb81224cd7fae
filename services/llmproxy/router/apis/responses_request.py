"""A Responses API request (POST /v1/responses) checked and turned into a chat completion body.

`previous_response_id` continues a stored response (apis/responses_storage.py) when the gateway
stores responses; the translation then puts the stored conversation before this request's
input. Other fields that point at OpenAI's own state (conversations, stored prompts,
background responses) are refused with a 400 saying to send the conversation instead.
Like OpenAI, unknown fields are refused; fields the gateway knows but cannot honour get a 400
naming them rather than being silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmproxy.router.apis.responses_input import chat_messages
from llmproxy.router.apis.responses_options import function_tools, response_format, tool_choice
from llmproxy.router.errors import InvalidRequestError
from llmproxy.router.json_body import (
    FieldChecks,
    check_model,
    is_positive_int,
    load_object,
    number_in,
)

# Translated into the chat completion body.
TRANSLATED_FIELDS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "user",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "stream",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "previous_response_id",
    }
)
# Accepted and echoed in the response, but nothing a chat completion takes: metadata is the
# client's own; `include` asks for extras (logprobs, encrypted reasoning) the gateway never adds;
# max_tool_calls counts built-in tool calls, which are refused anyway.
ACCEPTED_FIELDS = frozenset(
    {
        "metadata",
        "store",
        "stream_options",
        "include",
        "truncation",
        "max_tool_calls",
        "prompt_cache_retention",
        "background",
    }
)
_STATELESS = (
    "this gateway keeps no conversations, stored prompts or background responses. Continue "
    "from a stored response with previous_response_id, or send the whole conversation as "
    "input items: earlier input and output items followed by the new ones."
)
_NOT_STORING = (
    "'previous_response_id' is not supported: this gateway does not store responses (every "
    "answer has store: false). Send the whole conversation as input items instead: earlier "
    "input and output items followed by the new ones."
)
# Fields that need state on OpenAI's side: refused unless null.
STATEFUL_FIELDS = frozenset({"conversation", "prompt", "background_options"})
# Fields the gateway cannot translate to a chat completion: refused unless null.
UNSUPPORTED_FIELDS = frozenset(
    {
        "top_logprobs",
        "context_management",
        "moderation",
        "image",
        "access_programs",
        "prompt_cache_options",
    }
)
RESPONSES_FIELDS = TRANSLATED_FIELDS | ACCEPTED_FIELDS | STATEFUL_FIELDS | UNSUPPORTED_FIELDS


def _string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


_TYPES: FieldChecks = {
    "instructions": (lambda v: isinstance(v, str), "a string"),
    "max_output_tokens": (is_positive_int, "a positive integer"),
    "max_tool_calls": (is_positive_int, "a positive integer"),
    "temperature": (number_in(0, 2), "a number from 0 to 2"),
    "top_p": (number_in(0, 1), "a number from 0 to 1"),
    "user": (lambda v: isinstance(v, str), "a string"),
    "service_tier": (lambda v: isinstance(v, str), "a string"),
    "safety_identifier": (lambda v: isinstance(v, str), "a string"),
    "prompt_cache_key": (lambda v: isinstance(v, str), "a string"),
    "previous_response_id": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "prompt_cache_retention": (lambda v: isinstance(v, str), "a string"),
    "metadata": (_string_map, "an object of string values"),
    "parallel_tool_calls": (lambda v: isinstance(v, bool), "a boolean"),
    "store": (lambda v: isinstance(v, bool), "a boolean"),
    "stream": (lambda v: isinstance(v, bool), "a boolean"),
    "background": (lambda v: v is False, "false (background responses need a stored response)"),
    "stream_options": (lambda v: isinstance(v, dict), "an object"),
    "include": (
        lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
        "an array of strings",
    ),
    "truncation": (lambda v: v in ("auto", "disabled"), "'auto' or 'disabled'"),
    "text": (lambda v: isinstance(v, dict), "an object"),
    "reasoning": (lambda v: isinstance(v, dict), "an object"),
    "tools": (lambda v: isinstance(v, list), "an array"),
}
# Chat completion fields that take a Responses field's value as it is.
_COPIED = {
    "temperature": "temperature",
    "top_p": "top_p",
    "user": "user",
    "max_output_tokens": "max_completion_tokens",
    "service_tier": "service_tier",
    "safety_identifier": "safety_identifier",
    "prompt_cache_key": "prompt_cache_key",
}


@dataclass(frozen=True)
class ResponsesRequest:
    """A checked Responses request: its chat completion body and what the answer echoes."""

    model: str
    chat_body: dict[str, Any]
    echo: dict[str, Any]
    """The request's settings as the response object repeats them (instructions, tools,
    tool_choice, text, temperature, ...), OpenAI's defaults filled in."""
    previous_response_id: str | None = None
    """The stored response this one continues."""
    input_at: int = 0
    """Where the input's messages start in chat_body's messages (after the instructions)."""

    @property
    def store(self) -> bool:
        """Whether the answer is to be stored (what its `store` field says)."""
        return bool(self.echo["store"])


def _invalid(
    message: str, param: str | None = None, code: str | None = None
) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def _check_fields(body: dict[str, Any], storing: bool) -> None:
    for name in sorted(body):
        if name not in RESPONSES_FIELDS:
            raise _invalid(
                f"Unrecognized request argument supplied: {name}", name, "unknown_parameter"
            )
        if body[name] is None:
            continue
        if name == "previous_response_id" and not storing:
            raise _invalid(_NOT_STORING, name, "unsupported_parameter")
        if name in STATEFUL_FIELDS:
            raise _invalid(
                f"'{name}' is not supported: {_STATELESS}", name, "unsupported_parameter"
            )
        if name in UNSUPPORTED_FIELDS and not (name == "top_logprobs" and body[name] == 0):
            raise _invalid(
                f"'{name}' is not supported by this gateway, which answers Responses requests "
                "through chat completions.",
                name,
                "unsupported_parameter",
            )
        valid = _TYPES.get(name)
        if valid is not None and not valid[0](body[name]):
            if name == "background":
                raise _invalid(f"'background: true' is not supported: {_STATELESS}", name)
            raise _invalid(f"'{name}' must be {valid[1]}.", name)


def _check_model_and_input(body: dict[str, Any]) -> tuple[str, Any]:
    model = check_model(body)
    value = body.get("input")
    if not (isinstance(value, str) and value) and not (isinstance(value, list) and value):
        raise _invalid(
            "'input' is required: a non-empty string or a non-empty array of input items.",
            "input",
        )
    return model, value


def _choice_string(value: Any, param: str, allowed: tuple[str, ...] | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or (allowed is not None and value not in allowed):
        expected = "a string" if allowed is None else "one of " + ", ".join(allowed)
        raise _invalid(f"'{param}' must be {expected}.", param)
    return value


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def parse_responses_request(raw: bytes, storing: bool = False) -> ResponsesRequest:
    """Check a Responses request body and translate it; raise InvalidRequestError (400) saying
    what is wrong, unknown, or not translatable.

    storing: whether the gateway stores responses; without it `previous_response_id` is refused
    and every answer says `store: false`.
    """
    body = load_object(raw)
    _check_fields(body, storing)
    model, value = _check_model_and_input(body)
    chat: dict[str, Any] = {
        "model": model,
        "messages": chat_messages(value, body.get("instructions")),
    }
    if body.get("stream"):
        # The translation needs the usage chunk for the usage of response.completed.
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    for name, chat_name in _COPIED.items():
        if body.get(name) is not None:
            chat[chat_name] = body[name]
    chat_tools, echoed_tools = function_tools(body.get("tools") or [])
    if chat_tools:
        chat["tools"] = chat_tools
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    choice = tool_choice(body.get("tool_choice"), bool(chat_tools))
    if choice is not None:
        chat["tool_choice"] = choice
    text = body.get("text") or {}
    chat_format, echoed_format = response_format(text)
    if chat_format is not None:
        chat["response_format"] = chat_format
    verbosity = _choice_string(text.get("verbosity"), "text.verbosity", ("low", "medium", "high"))
    if verbosity is not None:
        chat["verbosity"] = verbosity
    reasoning = body.get("reasoning") or {}
    effort = _choice_string(reasoning.get("effort"), "reasoning.effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    echo = {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": effort, "summary": None},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": body.get("service_tier"),
        "store": storing and body.get("store") is not False,
        "temperature": _or(body.get("temperature"), 1.0),
        "text": {"format": echoed_format, "verbosity": verbosity or "medium"},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": echoed_tools,
        "top_p": _or(body.get("top_p"), 1.0),
        "truncation": body.get("truncation") or "disabled",
        "user": body.get("user"),
        "background": False,
    }
    input_at = 1 if body.get("instructions") else 0
    return ResponsesRequest(model, chat, echo, body.get("previous_response_id"), input_at)
