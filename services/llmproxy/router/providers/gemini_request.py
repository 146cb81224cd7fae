"""OpenAI chat and embeddings requests as Google Gemini generateContent/embedContent requests.

What Gemini has no counterpart for is refused with UnsupportedError naming the feature (a 400
once no other target of the model can take it) rather than silently dropped.
"""

from __future__ import annotations

import json
from typing import Any

from llmproxy.router.providers.base import UnsupportedError

# OpenAI request fields Gemini's API has no counterpart for, by the feature's name.
_REFUSED = {
    "logit_bias": "logit_bias",
    "logprobs": "logprobs",
    "top_logprobs": "logprobs",
    "audio": "audio output",
    "prediction": "predicted outputs",
    "web_search_options": "web_search_options",
    "functions": "legacy `functions` (use `tools`)",
    "function_call": "legacy `function_call` (use `tool_choice`)",
    "reasoning_effort": "reasoning_effort",
}
# OpenAI sampling fields and their generationConfig names.
_GENERATION = {
    "temperature": "temperature",
    "top_p": "topP",
    "n": "candidateCount",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "seed": "seed",
}
_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}


def unsupported(feature: str) -> UnsupportedError:
    """The refusal of one OpenAI feature Gemini targets cannot serve."""
    return UnsupportedError(f"{feature} is not supported by Gemini targets")


def _data_url(url: str, what: str) -> dict[str, Any]:
    # Gemini takes inline bytes, or files it hosts itself; an arbitrary URL it cannot fetch.
    head, sep, data = url.partition(",")
    if not (head.startswith("data:") and head.endswith(";base64") and sep):
        raise unsupported(f"{what} other than base64 data: URLs")
    return {"inlineData": {"mimeType": head[len("data:") : -len(";base64")], "data": data}}


def _part(part: Any) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return {"text": str(part.get("text", ""))}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url", "") if isinstance(image, dict) else ""
        return _data_url(str(url), "image_url parts")
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        mime = f"audio/{audio.get('format', 'wav')}"
        return {"inlineData": {"mimeType": mime, "data": str(audio.get("data", ""))}}
    raise unsupported(f"content parts of type {kind!r}")


def _parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    if isinstance(content, list):
        return [_part(part) for part in content]
    raise unsupported(f"message content of type {type(content).__name__}")


def _text(content: Any) -> str:
    return "".join(part.get("text", "") for part in _parts(content))


def _function_call(call: Any) -> tuple[str, dict[str, Any]]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or call.get("type", "function") != "function":
        raise unsupported("tool calls other than function calls")
    name = str(function.get("name", ""))
    try:
        args = json.loads(function.get("arguments") or "{}")
    except ValueError:
        args = None
    if not isinstance(args, dict):
        raise UnsupportedError(f"the arguments of tool call {name!r} are not a JSON object")
    return name, {"functionCall": {"name": name, "args": args}}


def _function_response(message: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    call_id = str(message.get("tool_call_id", ""))
    name = names.get(call_id)
    if name is None:
        raise UnsupportedError(f"tool message {call_id!r} answers no earlier tool call")
    text = _text(message.get("content"))
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    # Gemini's response must be an object: a tool's JSON object as it is, anything else wrapped.
    response = parsed if isinstance(parsed, dict) else {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


def _contents(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system parts, contents): system turns gathered, the rest as user/model turns."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name: Gemini answers by name
    for message in messages:
        if not isinstance(message, dict):
            raise UnsupportedError("every message must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_parts(message.get("content")))
            continue
        if role == "user":
            turn, parts = "user", _parts(message.get("content"))
        elif role == "assistant":
            turn, parts = "model", _parts(message.get("content"))
            for call in message.get("tool_calls") or []:
                name, part = _function_call(call)
                names[str(call.get("id", ""))] = name
                parts.append(part)
        elif role == "tool":
            turn, parts = "user", [_function_response(message, names)]
        else:
            raise unsupported(f"{role!r} messages")
        parts = parts or [{"text": ""}]  # Gemini refuses a turn without parts
        # Consecutive turns of one role become one: a model turn's function calls must be
        # answered by one turn holding all their responses.
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    return system, contents


def _response_format(config: dict[str, Any], response_format: Any) -> None:
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in (None, "text"):
        return
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is not None:
            config["responseJsonSchema"] = schema
    else:
        raise unsupported(f"response_format {kind!r}")


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config = {name: body[key] for key, name in _GENERATION.items() if body.get(key) is not None}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    _response_format(config, body.get("response_format"))
    modalities = body.get("modalities")
    if modalities is not None and list(modalities) != ["text"]:
        raise unsupported("output modalities other than text")
    return config


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    declarations = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise unsupported(f"tools of type {tool.get('type')!r}")
        declaration: dict[str, Any] = {"name": function.get("name", "")}
        if function.get("description"):
            declaration["description"] = function["description"]
        if function.get("parameters") is not None:
            # JSON Schema as OpenAI clients write it; Gemini's `parameters` takes only a subset.
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}]


def _tool_config(choice: Any) -> dict[str, Any]:
    if isinstance(choice, str) and choice in _TOOL_MODES:
        return {"functionCallingConfig": {"mode": _TOOL_MODES[choice]}}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and function.get("name"):
        names = [function["name"]]
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": names}}
    raise unsupported(f"tool_choice {choice!r}")


def to_gemini_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as a Gemini generateContent request (the model goes in the URL)."""
    for field, feature in _REFUSED.items():
        if body.get(field) not in (None, False):
            raise unsupported(feature)
    system, contents = _contents(body.get("messages") or [])
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    config = _generation_config(body)
    if config:
        request["generationConfig"] = config
    if body.get("tools"):
        request["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        request["toolConfig"] = _tool_config(body["tool_choice"])
    return request


def to_batch_embed_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI embeddings request as a Gemini batchEmbedContents request."""
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not all(isinstance(item, str) for item in inputs):
        raise unsupported("embedding inputs other than strings (token arrays)")
    model = f"models/{body.get('model', '')}"
    requests = []
    for text in inputs:
        request: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
        if body.get("dimensions") is not None:
            request["outputDimensionality"] = body["dimensions"]
        requests.append(request)
    return {"requests": requests}
