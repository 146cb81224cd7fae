"""An Anthropic Messages request as a chat completion body, checked on the way.

Translated: `system` (a string, or text blocks joined by blank lines) becomes the system
message, `messages` chat messages (messages_turns.py). `tools` become function tools,
`tool_choice` (auto, any, tool, none; `disable_parallel_tool_use`) their chat equivalents,
`max_tokens` max_completion_tokens, `stop_sequences` stop, `metadata.user_id` user; temperature
(Anthropic's 0 to 1) and top_p pass as they are; a stream asks for usage.

Accepted and ignored, as nothing of the answer depends on them: `cache_control` anywhere
(prompt caching is each provider's own business), `thinking` of type disabled or adaptive (an
answer without thinking is one adaptive thinking may give), `service_tier`, and thinking blocks
of earlier assistant turns (Anthropic drops those from the context too).

Refused with a 400 naming the feature: what a chat completion cannot express (`top_k`,
extended thinking with a budget, server tools, documents, prefill of a final assistant turn,
the fields of Anthropic's platform such as `container` or `mcp_servers`); any other unknown
field is refused by name, as Anthropic does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmproxy.router.apis.messages_turns import bad, chat_messages, text_of, unsupported
from llmproxy.router.json_body import number_in

TRANSLATED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "metadata",
        "tools",
        "tool_choice",
    }
)
IGNORED = frozenset({"cache_control", "service_tier", "thinking"})
# Anthropic's own features, each with why the gateway cannot serve it.
REFUSED = {
    "top_k": "chat completions have no top-k sampling",
    "container": "code execution containers are Anthropic's own",
    "context_management": "context editing is Anthropic's own",
    "mcp_servers": "the MCP connector is Anthropic's own",
    "output_config": "output configuration (effort, structured output) is not translated",
    "speed": "fast mode is Anthropic's own",
    "inference_geo": "the gateway picks the provider, not the region",
    "diagnostics": "prompt-cache diagnostics are Anthropic's own",
    "user_profile_id": "user profiles are Anthropic's own",
    "workspace_id": "workspaces are Anthropic's own",
    "compaction": "compaction is Anthropic's own",
    "fallbacks": "the gateway's own failover picks the fallbacks",
}
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _field(body: dict[str, Any], name: str, valid: Callable[[Any], bool], expected: str) -> Any:
    value = body.get(name)
    if value is not None and not valid(value):
        raise bad(f"must be {expected}", name)
    return value


def _check_fields(body: dict[str, Any]) -> None:
    for name in sorted(body):
        if name in REFUSED:
            raise unsupported(f"{name!r} ({REFUSED[name]})", name)
        if name not in TRANSLATED and name not in IGNORED:
            raise bad("Extra inputs are not permitted", name)
    thinking = body.get("thinking")
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if kind == "enabled":
            raise unsupported(
                "extended thinking with a token budget (type 'enabled'); send type "
                "'adaptive' or 'disabled', or leave 'thinking' out",
                "thinking",
            )
        if kind not in ("adaptive", "disabled"):
            raise bad("must be an object with type 'enabled', 'adaptive' or 'disabled'", "thinking")
    tier = body.get("service_tier")
    if tier is not None and tier not in ("auto", "standard_only"):
        raise bad("must be 'auto' or 'standard_only'", "service_tier")


def _system(body: dict[str, Any]) -> str:
    system = body.get("system")
    if system is None or isinstance(system, str):
        return system or ""
    if not isinstance(system, list):
        raise bad("must be a string or an array of text blocks", "system")
    texts = []
    for index, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise bad("must be a text block", f"system.{index}")
        texts.append(text_of(block, f"system.{index}"))
    return "\n\n".join(t for t in texts if t)


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad("must be an array of tools", "tools")
    out = []
    for index, tool in enumerate(tools):
        where = f"tools.{index}"
        if not isinstance(tool, dict):
            raise bad("must be an object", where)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise unsupported(f"server tools ({kind!r})", f"{where}.type")
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name:
            raise bad("must be a non-empty string", f"{where}.name")
        if not isinstance(schema, dict):
            raise bad("must be a JSON schema object", f"{where}.input_schema")
        function: dict[str, Any] = {"name": name, "parameters": schema}
        description = tool.get("description")
        if description is not None:
            if not isinstance(description, str):
                raise bad("must be a string", f"{where}.description")
            function["description"] = description
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(body: dict[str, Any], chat: dict[str, Any]) -> None:
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or kind not in (*TOOL_CHOICES, "tool"):
        raise bad("must be an object with type 'auto', 'any', 'tool' or 'none'", "tool_choice")
    if not chat.get("tools"):
        if kind == "none":
            return  # nothing to forbid
        raise bad("requires 'tools'", "tool_choice")
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise bad("a tool choice of type 'tool' needs a string 'name'", "tool_choice.name")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        chat["tool_choice"] = TOOL_CHOICES[kind]
    serial = choice.get("disable_parallel_tool_use")
    if serial is not None and not isinstance(serial, bool):
        raise bad("must be a boolean", "tool_choice.disable_parallel_tool_use")
    if serial:
        chat["parallel_tool_calls"] = False


def _sampling(body: dict[str, Any], chat: dict[str, Any]) -> None:
    for name in ("temperature", "top_p"):
        value = _field(body, name, number_in(0, 1), "a number from 0 to 1")
        if value is not None:
            chat[name] = value
    stop = _field(
        body,
        "stop_sequences",
        lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
        "an array of strings",
    )
    if stop:
        chat["stop"] = stop
    metadata = _field(body, "metadata", lambda v: isinstance(v, dict), "an object")
    for name in sorted(metadata or {}):
        if name != "user_id":
            raise bad("Extra inputs are not permitted", f"metadata.{name}")
    user = (metadata or {}).get("user_id")
    if user is not None:
        if not isinstance(user, str):
            raise bad("must be a string", "metadata.user_id")
        chat["user"] = user


def to_chat_body(body: dict[str, Any]) -> dict[str, Any]:
    """A Messages request body (already a JSON object) as a chat completion body."""
    _check_fields(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("Field required: a non-empty string", "model")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise bad("Field required: a positive integer", "max_tokens")
    messages = chat_messages(body)
    system = _system(body)
    if system:
        messages.insert(0, {"role": "system", "content": system})
    stream = _field(body, "stream", lambda v: isinstance(v, bool), "a boolean")
    chat: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_completion_tokens": max_tokens,
    }
    _sampling(body, chat)
    tools = _tools(body)
    if tools:
        chat["tools"] = tools
    _tool_choice(body, chat)
    if stream:
        # The way back needs the usage chunk for message_delta's counts.
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat
