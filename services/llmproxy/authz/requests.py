"""What a check needs from Envoy's CheckRequest: the presented key and the request's body."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError, Message

from llmproxy._gen.router.v1 import anthropic_pb2, chat_pb2, openai_pb2
from llmproxy.common.contract import API_KEY_HEADER, AUTHORIZATION_HEADER
from llmproxy.common.json_depth import too_deep
from llmproxy.common.tokens import estimate_request_tokens

_GRPC_FRAME_HEADER = struct.Struct(">BI")  # compressed flag, message length


@dataclass(frozen=True)
class CheckInput:
    """The parts of a request a decision depends on."""

    credential: str | None
    body: dict[str, Any] | None

    @property
    def model(self) -> str | None:
        """The requested model, when the body is a JSON object with a string `model`."""
        model = self.body.get("model") if self.body is not None else None
        return model if isinstance(model, str) else None

    @property
    def token_estimate(self) -> int | None:
        """common.tokens' estimate of what the request may cost, when it has a JSON body."""
        return estimate_request_tokens(self.body) if self.body is not None else None


def credential(headers: dict[str, str]) -> str | None:
    """The key from `Authorization: Bearer <key>` (the OpenAI SDK) or `x-api-key` (Anthropic's).

    Envoy hands header names lowercased. An Authorization header with another scheme is not a
    key; x-api-key is then still looked at.
    """
    authorization = headers.get(AUTHORIZATION_HEADER, "").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    api_key = headers.get(API_KEY_HEADER, "").strip()
    return api_key or None


def _http_body(message_type: Callable[[], Message]) -> Callable[[bytes], dict[str, Any] | None]:
    # OpenAIService: the client's JSON travels as google.api.HttpBody in field `body`.
    def read(data: bytes) -> dict[str, Any] | None:
        message: Any = message_type()
        message.ParseFromString(data)
        return _json_object(message.body.data)

    return read


def _typed(
    message_type: Callable[[], Message], inner: str | None = None
) -> Callable[[bytes], dict[str, Any] | None]:
    # ChatService: typed fields with the JSON API's names (model, messages, max_tokens, input).
    def read(data: bytes) -> dict[str, Any] | None:
        message: Any = message_type()
        message.ParseFromString(data)
        fields = MessageToDict(message, preserving_proto_field_name=True)
        found = fields.get(inner, {}) if inner else fields
        return found if isinstance(found, dict) else None

    return read


_ROUTER = "/llmproxy.router.v1"
# gRPC clients reach the router through the client listener too; each method's request is
# decoded here so the model check cannot be sidestepped by speaking gRPC. A test keeps this
# table complete: every method of those services is either here or in GRPC_WITHOUT_MODEL.
GRPC_REQUESTS: dict[str, Callable[[bytes], dict[str, Any] | None]] = {
    f"{_ROUTER}.OpenAIService/CreateChatCompletion": _http_body(
        openai_pb2.CreateChatCompletionRequest
    ),
    f"{_ROUTER}.OpenAIService/CreateEmbedding": _http_body(openai_pb2.CreateEmbeddingRequest),
    f"{_ROUTER}.OpenAIService/CreateResponse": _http_body(openai_pb2.CreateResponseRequest),
    f"{_ROUTER}.OpenAIService/CreateCompletion": _http_body(openai_pb2.CreateCompletionRequest),
    f"{_ROUTER}.AnthropicService/CreateMessage": _http_body(anthropic_pb2.CreateMessageRequest),
    f"{_ROUTER}.ChatService/Chat": _typed(chat_pb2.ChatRequest),
    f"{_ROUTER}.ChatService/StreamChat": _typed(chat_pb2.StreamChatRequest, "chat"),
    f"{_ROUTER}.ChatService/Embed": _typed(chat_pb2.EmbedRequest),
}
# Methods that name no model to spend on: nothing to check.
GRPC_WITHOUT_MODEL = frozenset(
    {
        f"{_ROUTER}.OpenAIService/ListOpenAIModels",
        f"{_ROUTER}.OpenAIService/GetModel",
        f"{_ROUTER}.OpenAIService/GetResponse",
        f"{_ROUTER}.OpenAIService/DeleteResponse",
    }
)


def _grpc_body(raw: bytes, path: str) -> dict[str, Any] | None:
    read = GRPC_REQUESTS.get(path.split("?", 1)[0])
    if read is None or len(raw) < _GRPC_FRAME_HEADER.size:
        return None
    compressed, length = _GRPC_FRAME_HEADER.unpack_from(raw)
    message = raw[_GRPC_FRAME_HEADER.size : _GRPC_FRAME_HEADER.size + length]
    if compressed or len(message) != length:
        return None
    try:
        return read(message)
    except DecodeError:
        return None


def _json_object(raw: bytes) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    # Too deep to estimate safely: no model to check, and the router refuses it with a 400.
    return body if isinstance(body, dict) and not too_deep(body) else None


def json_body(raw: bytes, content_type: str, path: str = "") -> dict[str, Any] | None:
    """The request body as a JSON object, or None when it is empty, not JSON or not an object.

    A gRPC request (to the router's OpenAIService or ChatService) is decoded by its method
    path into the same shape. Bodies that are not valid requests are the router's to refuse
    (with a 400 naming the problem); here they only mean there is no model to check.
    """
    if content_type.startswith("application/grpc"):
        return _grpc_body(raw, path)
    return _json_object(raw)


def check_input(request: external_auth_pb2.CheckRequest) -> CheckInput:
    """The credential and JSON body of Envoy's check request."""
    http = request.attributes.request.http
    headers = dict(http.headers)
    raw = http.raw_body or http.body.encode()
    body = json_body(raw, headers.get("content-type", ""), http.path)
    return CheckInput(credential(headers), body)
