"""The fake provider's Google Gemini API: request checks and answers as pure functions.

Requests are checked as strictly as Gemini checks them (unknown fields, roles and part kinds
are 400s), so an adapter that sends what Gemini would refuse fails against the fake too.
Answers reuse the shared fake answer, so Gemini's text and token counts match OpenAI's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from llmproxy.fakeprovider.responses import (
    JSON,
    Answer,
    ChatRequest,
    Message,
    answer,
    embedding_vector,
    text_pieces,
)
from llmproxy.fakeprovider.validation import RequestError

PREFIX = "/v1beta/"
"""Where the Gemini routes live."""

_REQUEST_FIELDS = frozenset(
    {
        "contents",
        "systemInstruction",
        "generationConfig",
        "tools",
        "toolConfig",
        "safetySettings",
        "cachedContent",
    }
)
_CONFIG_FIELDS = frozenset(
    {
        "temperature",
        "topP",
        "topK",
        "candidateCount",
        "maxOutputTokens",
        "stopSequences",
        "presencePenalty",
        "frequencyPenalty",
        "seed",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "thinkingConfig",
    }
)
_PART_FIELDS = frozenset({"text", "inlineData", "functionCall", "functionResponse", "thought"})
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass(frozen=True)
class GeminiRequest:
    """A checked generateContent request: the shared chat request and Gemini's extras."""

    chat: ChatRequest
    json_mode: bool = False
    forced_function: str | None = None
    """The function the model must call (toolConfig mode ANY), if any."""


def error(status: int, message: str) -> JSON:
    """An error body in Gemini's shape."""
    name = _STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    return {"error": {"code": status, "message": message, "status": name}}


def models_list(models: Sequence[str]) -> JSON:
    """The ``GET /v1beta/models`` body."""
    methods = ["generateContent", "streamGenerateContent", "countTokens", "batchEmbedContents"]
    return {
        "models": [
            {"name": f"models/{m}", "displayName": m, "supportedGenerationMethods": methods}
            for m in models
        ]
    }


def _invalid(message: str) -> RequestError:
    return RequestError(400, message)


def _known(fields: object, known: frozenset[str], where: str) -> JSON:
    """fields, if it is an object holding only known names."""
    if not isinstance(fields, dict):
        raise _invalid(f"Invalid value at '{where}': expected an object")
    extra = sorted(set(fields) - known)
    if extra:
        raise _invalid(f"Invalid JSON payload received. Unknown name \"{extra[0]}\" at '{where}'.")
    return fields


def _text(parts: object, where: str) -> str:
    if not isinstance(parts, list) or not parts:
        raise _invalid(f"{where}.parts: must not be empty")
    texts = []
    for index, raw in enumerate(parts):
        part = _known(raw, _PART_FIELDS, f"{where}.parts[{index}]")
        if not part:
            raise _invalid(f"{where}.parts[{index}]: a part must hold data")
        if isinstance(part.get("text"), str) and not part.get("thought"):
            texts.append(part["text"])
    return " ".join(texts)


def _config(raw: object) -> JSON:
    if raw is None:
        return {}
    config = _known(raw, _CONFIG_FIELDS, "generation_config")
    limit = config.get("maxOutputTokens")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise _invalid("generation_config.max_output_tokens must be a positive integer")
    if config.get("candidateCount", 1) != 1:
        raise _invalid("Only one candidate can be specified in the current model")
    return config


def _forced_function(body: JSON) -> str | None:
    declared = [
        d.get("name")
        for tool in body.get("tools") or []
        for d in (tool.get("functionDeclarations") or [] if isinstance(tool, dict) else [])
        if isinstance(d, dict)
    ]
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if not declared or config.get("mode") != "ANY":
        return None
    allowed = config.get("allowedFunctionNames") or declared
    return str(allowed[0])


def parse_request(body: JSON, model: str) -> GeminiRequest:
    """Check a generateContent body; the chat request it stands for."""
    _known(body, _REQUEST_FIELDS, "request")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _invalid("* GenerateContentRequest.contents: contents is not specified")
    messages: list[Message] = []
    system = body.get("systemInstruction")
    if system is not None:
        messages.append(Message("system", _text((system or {}).get("parts"), "system_instruction")))
    for index, raw in enumerate(contents):
        where = f"contents[{index}]"
        content = _known(raw, frozenset({"role", "parts"}), where)
        role = content.get("role", "user")
        if role not in ("user", "model"):
            raise _invalid(f"Please use a valid role: user, model. ({where}.role: {role!r})")
        text = _text(content.get("parts"), where)
        messages.append(Message("user" if role == "user" else "assistant", text))
    config = _config(body.get("generationConfig"))
    chat = ChatRequest(model, tuple(messages), max_tokens=config.get("maxOutputTokens"))
    json_mode = config.get("responseMimeType") == "application/json"
    return GeminiRequest(chat, json_mode=json_mode, forced_function=_forced_function(body))


def _usage(result: Answer) -> JSON:
    usage: JSON = {
        "promptTokenCount": result.prompt_tokens,
        "candidatesTokenCount": result.completion_tokens,
        "totalTokenCount": result.total_tokens,
    }
    if result.cached_tokens:  # promptTokenCount counts them too
        usage["cachedContentTokenCount"] = result.cached_tokens
    return usage


def _reply(request: GeminiRequest) -> tuple[Answer, str]:
    result = answer(request.chat)
    text = json.dumps({"answer": result.text}) if request.json_mode else result.text
    return result, text


def _envelope(request: GeminiRequest, candidate: JSON, result: Answer) -> JSON:
    return {
        "candidates": [{"index": 0, **candidate}],
        "usageMetadata": _usage(result),
        "modelVersion": request.chat.model,
        "responseId": hashlib.sha256(repr(request.chat).encode()).hexdigest()[:24],
    }


def generate_content(request: GeminiRequest) -> JSON:
    """The non-streamed ``:generateContent`` answer."""
    result, text = _reply(request)
    if request.forced_function:
        call = {"name": request.forced_function, "args": {"query": text}}
        parts: list[JSON] = [{"functionCall": call}]
        reason = "STOP"
    else:
        parts = [{"text": text}]
        reason = "MAX_TOKENS" if result.truncated else "STOP"
    candidate = {"content": {"role": "model", "parts": parts}, "finishReason": reason}
    return _envelope(request, candidate, result)


def stream_events(request: GeminiRequest) -> list[JSON]:
    """The ``:streamGenerateContent`` answers, in order: text pieces, the last with the
    finish reason (usage on every one, growing, as Gemini sends it)."""
    whole = generate_content(request)
    if request.forced_function:
        return [whole]
    result, text = _reply(request)
    pieces = text_pieces(text) or [""]
    events = []
    for index, piece in enumerate(pieces):
        candidate: JSON = {"content": {"role": "model", "parts": [{"text": piece}]}}
        if index == len(pieces) - 1:
            candidate["finishReason"] = whole["candidates"][0]["finishReason"]
        events.append(_envelope(request, candidate, result))
    return events


def batch_embed(model: str, body: JSON) -> JSON:
    """The ``:batchEmbedContents`` answer: one vector per request."""
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise _invalid("* BatchEmbedContentsRequest.requests: requests is not specified")
    embeddings = []
    for index, raw in enumerate(requests):
        where = f"requests[{index}]"
        fields = frozenset({"model", "content", "taskType", "outputDimensionality"})
        item = _known(raw, fields, where)
        if item.get("model") != f"models/{model}":
            raise _invalid(f"{where}.model: must be models/{model}, as in the URL")
        text = _text((item.get("content") or {}).get("parts"), f"{where}.content")
        embeddings.append({"values": embedding_vector(text)})
    return {"embeddings": embeddings}
