"""The fake provider's Bedrock runtime: Converse and ConverseStream, SigV4 checked for real.

The fake knows one pair of test credentials (TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY) and
checks every signature made with them as AWS does, with botocore's signer; other keys are
unknown to it (403 UnrecognizedClientException). Answers are the fake's usual deterministic
text; a request offering tools gets a toolUse of the first one until it sends a toolResult.
Streams are written in AWS's event stream framing by the small encoder here.
"""

from __future__ import annotations

import binascii
import hmac
import json
import re
import struct
from collections.abc import Mapping
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from llmproxy.fakeprovider import responses
from llmproxy.fakeprovider.responses import ChatRequest, Message
from llmproxy.fakeprovider.validation import RequestError

TEST_ACCESS_KEY_ID = "AKIAFAKEPROVIDER0001"
"""The access key the fake accepts; pair it with TEST_SECRET_ACCESS_KEY."""
TEST_SECRET_ACCESS_KEY = "fake-provider-secret-access-key"  # noqa: S105 - a test credential
"""The secret of TEST_ACCESS_KEY_ID, for the fake to check signatures with."""

LIST_PATH = "/async-invoke"
"""ListAsyncInvokes, the runtime API's token-free call the health service probes with."""
EVENT_STREAM = "application/vnd.amazon.eventstream"

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
_ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


class BedrockError(RequestError):
    """A refusal in Bedrock's shape: its AWS error type goes in `x-amzn-errortype`."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(status, message)
        self.error_type = error_type


def error_type_for(status: int) -> str:
    """The AWS error type Bedrock answers status with."""
    return _ERROR_TYPES.get(
        status, "InternalServerException" if status >= 500 else "ValidationException"
    )


def error_body(message: str) -> dict[str, Any]:
    """Bedrock's error body."""
    return {"message": message}


def verify_signature(
    method: str, raw_path: str, query: str, headers: Mapping[str, str], body: bytes
) -> None:
    """Check the request's SigV4 signature as AWS would; BedrockError (403) if it is wrong."""
    match = _AUTHORIZATION.match(headers.get("authorization", ""))
    if match is None:
        raise BedrockError(403, "IncompleteSignatureException", "Authorization header is not SigV4")
    if match["key"] != TEST_ACCESS_KEY_ID:
        raise BedrockError(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    timestamp = headers.get("x-amz-date", "")
    if match["service"] != "bedrock" or not timestamp.startswith(match["date"]):
        raise BedrockError(403, "InvalidSignatureException", "Credential scope does not match")
    signed = match["signed"].split(";")
    if "host" not in signed or any(name not in headers for name in signed):
        raise BedrockError(403, "InvalidSignatureException", "A signed header is missing")
    url = f"http://{headers['host']}{raw_path}" + (f"?{query}" if query else "")
    request: Any = AWSRequest(
        method=method, url=url, data=body, headers={name: headers[name] for name in signed}
    )
    request.context["timestamp"] = timestamp
    signer = SigV4Auth(
        Credentials(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY), "bedrock", match["region"]
    )
    expected = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    if not hmac.compare_digest(expected, match["signature"]):
        raise BedrockError(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        )


def _texts(blocks: Any) -> str:
    if not isinstance(blocks, list):
        raise BedrockError(400, "ValidationException", "content must be a list of blocks")
    parts = []
    for block in blocks:
        if not isinstance(block, dict) or len(block) != 1:
            raise BedrockError(400, "ValidationException", "each content block has one member")
        if "text" in block:
            parts.append(str(block["text"]))
        elif "toolResult" in block:
            parts.append(_texts(block["toolResult"].get("content", [])))
        elif "json" in block:
            parts.append(json.dumps(block["json"]))
    return " ".join(p for p in parts if p)


def parse_converse(model: str, body: Any) -> tuple[ChatRequest, dict[str, Any] | None]:
    """The fake's view of a Converse request, and the tool it will call (if any)."""
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("messages"), list)
        or not body["messages"]
    ):
        raise BedrockError(400, "ValidationException", "messages: at least one message is required")
    messages = [Message("system", _texts(body.get("system", [])))] if body.get("system") else []
    last_role = ""
    for raw in body["messages"]:
        role = raw.get("role") if isinstance(raw, dict) else None
        if role not in ("user", "assistant"):
            raise BedrockError(400, "ValidationException", f"unknown role {role!r}")
        if role == last_role:
            raise BedrockError(
                400, "ValidationException", "roles must alternate between user and assistant"
            )
        last_role = role
        messages.append(Message(role, _texts(raw.get("content"))))
    config = body.get("inferenceConfig") or {}
    max_tokens = config.get("maxTokens")
    chat = ChatRequest(
        model, tuple(messages), max_tokens=max_tokens if isinstance(max_tokens, int) else None
    )
    tools = (body.get("toolConfig") or {}).get("tools") or []
    last_content = body["messages"][-1].get("content") or []
    answered = any(isinstance(b, dict) and "toolResult" in b for b in last_content)
    tool = tools[0].get("toolSpec") if tools and not answered else None
    return chat, tool


def _tool_use(chat: ChatRequest, tool: dict[str, Any]) -> dict[str, Any]:
    last_user = next((m.text for m in reversed(chat.messages) if m.role == "user"), "")
    return {
        "toolUseId": f"tooluse_{len(chat.messages)}",
        "name": tool.get("name", ""),
        "input": {"query": last_user},
    }


def _usage(result: responses.Answer) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "inputTokens": result.prompt_tokens - result.cached_tokens,
        "outputTokens": result.completion_tokens,
        "totalTokens": result.total_tokens,
    }
    if result.cached_tokens:  # counted apart from inputTokens, as Anthropic does
        usage["cacheReadInputTokens"] = result.cached_tokens
        usage["cacheWriteInputTokens"] = 0
    return usage


def converse(chat: ChatRequest, tool: dict[str, Any] | None) -> dict[str, Any]:
    """The Converse answer to chat: a toolUse of tool, or the fake's text."""
    result = responses.answer(chat)
    if tool is not None:
        content: list[dict[str, Any]] = [{"toolUse": _tool_use(chat, tool)}]
        stop = "tool_use"
    else:
        content = [{"text": result.text}]
        stop = "max_tokens" if result.truncated else "end_turn"
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": _usage(result),
        "metrics": {"latencyMs": 1},
    }


def converse_events(
    chat: ChatRequest, tool: dict[str, Any] | None
) -> list[tuple[str, dict[str, Any]]]:
    """The ConverseStream events of the same answer: (event type, payload) each."""
    whole = converse(chat, tool)
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    if tool is not None:
        use = whole["output"]["message"]["content"][0]["toolUse"]
        start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
        arguments = json.dumps(use["input"])
        half = len(arguments) // 2
        events.append(("contentBlockStart", {"contentBlockIndex": 0, "start": start}))
        for piece in (arguments[:half], arguments[half:]):
            events.append(
                (
                    "contentBlockDelta",
                    {"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}},
                )
            )
    else:
        text = whole["output"]["message"]["content"][0]["text"]
        for piece in responses.text_pieces(text):
            events.append(("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}))
    events.append(("contentBlockStop", {"contentBlockIndex": 0}))
    events.append(("messageStop", {"stopReason": whole["stopReason"]}))
    events.append(("metadata", {"usage": whole["usage"], "metrics": whole["metrics"]}))
    return events


def _header(name: str, value: str) -> bytes:
    encoded = value.encode()
    # Type 7 is a string: name length, name, type, value length, value.
    return (
        struct.pack("!B", len(name)) + name.encode() + struct.pack("!BH", 7, len(encoded)) + encoded
    )


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One message of AWS's event stream framing: prelude (lengths and CRC), headers, payload,
    CRC of the whole."""
    head = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack("!II", total, len(head))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack("!I", binascii.crc32(message))


def encode_event(event_type: str, payload: dict[str, Any]) -> bytes:
    """One ConverseStream event."""
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_message(headers, json.dumps(payload).encode())


def encode_exception(exception_type: str, message: str) -> bytes:
    """An exception in the middle of a ConverseStream (e.g. throttlingException)."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, json.dumps({"message": message}).encode())
