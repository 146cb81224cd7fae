"""AWS Bedrock's Converse and ConverseStream behind OpenAI's chat completion format.

Each call is signed with SigV4 (botocore's signer) for the provider's own host, whether it goes
straight there or through Envoy's egress route, which sends that same Host upstream. Streams
come in AWS's event stream framing (application/vnd.amazon.eventstream), decoded with botocore's
parser. Errors carry their type in the `x-amzn-errortype` header: throttling and server errors
may be retried elsewhere, validation and authentication errors may not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
from botocore.eventstream import EventStreamBuffer, ParserError

from llmproxy.common import aws
from llmproxy.router.providers.base import (
    HttpProvider,
    NoLegacyCompletions,
    Provider,
    ProviderCallError,
    UnsupportedError,
    failure,
    refusal_body,
)
from llmproxy.router.providers.converse import (
    ChunkWriter,
    stream_exception,
    to_chat_completion,
    to_converse_request,
)

# Error types that mean "busy", whatever status they come with: another try may answer.
RETRYABLE_ERRORS = frozenset(
    {"ThrottlingException", "ServiceQuotaExceededException", "ModelNotReadyException"}
)
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}


def error_type(response: httpx.Response) -> str:
    """The AWS error type of an answer (`ThrottlingException`), or "" when it names none."""
    raw: str = response.headers.get("x-amzn-errortype", "")
    return raw.split(":", 1)[0]


def bedrock_failure(provider: Provider, response: httpx.Response, body: bytes) -> ProviderCallError:
    """The error for a non-200 Bedrock answer, its body in OpenAI's error shape."""
    base = failure(provider, response, body)
    kind = error_type(response)
    try:
        message = json.loads(body).get("message") or kind
    except (ValueError, AttributeError):
        message = body.decode("utf-8", "replace")[:200] or kind
    shaped = {
        "error": {
            "message": f"Bedrock: {message}",
            "type": _OPENAI_ERROR_TYPES.get(base.status, "upstream_error"),
            "param": None,
            "code": kind or None,
        }
    }
    return ProviderCallError(
        f"provider {provider.name!r} answered {base.status} {kind}".rstrip(),
        status=base.status,
        retryable=base.retryable or kind in RETRYABLE_ERRORS,
        body=json.dumps(shaped).encode(),
        retry_after_s=base.retry_after_s,
    )


def model_path(model: str, operation: str) -> str:
    """`/model/<id>/<operation>`, the id percent-encoded as the AWS SDKs do (ARNs, colons)."""
    return f"/model/{quote(model, safe='')}/{operation}"


class BedrockClient(NoLegacyCompletions, HttpProvider):
    """Bedrock's runtime API for one region, answering in OpenAI's format."""

    def __init__(self, transport: httpx.AsyncBaseTransport, provider: Provider) -> None:
        super().__init__(transport, provider)
        if provider.region is None or provider.aws_credentials is None:
            raise ValueError(f"bedrock provider {provider.name!r} needs a region and credentials")
        self._region = provider.region
        self._credentials = provider.aws_credentials
        self._origin = provider.origin_url or provider.base_url
        self._signed = {"content-type": "application/json"}

    def headers(self) -> dict[str, str]:
        """JSON in and out; the signature is added per call."""
        return {"content-type": "application/json", "accept": "application/json"}

    async def request_headers(self, path: str, content: bytes) -> list[tuple[str, str]]:
        """The call's headers with its SigV4 signature over the provider's own URL."""
        await aws.fresh(self._credentials)
        signature = aws.sign(
            self._credentials,
            self._region,
            f"{self._origin}{path}",
            headers=self._signed,
            body=content,
        )
        return [*self._header_list, *signature.items()]

    async def _call(self, path: str, body: dict[str, Any]) -> httpx.Response:
        response = await self._send(path, body)
        if response.status_code == 200:
            return response
        raise bedrock_failure(self.provider, response, await refusal_body(response))

    async def chat(self, body: dict[str, Any]) -> bytes:
        """POST /model/<id>/converse and answer as chat.completion JSON."""
        model = body["model"]
        response = await self._call(model_path(model, "converse"), to_converse_request(body))
        try:
            content = await response.aread()
        except httpx.HTTPError as exc:
            raise ProviderCallError(
                f"provider {self.provider.name!r} answer cut: {type(exc).__name__}",
                status=502,
                retryable=True,
            ) from exc
        finally:
            await response.aclose()
        answer = json.loads(content)
        request_id = response.headers.get("x-amzn-requestid", "")
        return json.dumps(to_chat_completion(answer, model, request_id)).encode()

    async def open_chat_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """POST /model/<id>/converse-stream; answer as OpenAI chunks, a usage chunk, [DONE]."""
        model = body["model"]
        path = model_path(model, "converse-stream")
        response = await self._call(path, to_converse_request(body))
        writer = ChunkWriter(model, response.headers.get("x-amzn-requestid", ""))
        return self._translate(response, writer)

    async def _translate(
        self, response: httpx.Response, writer: ChunkWriter
    ) -> AsyncIterator[bytes]:
        buffer = EventStreamBuffer()
        try:
            async for raw in response.aiter_bytes():
                buffer.add_data(raw)
                for message in buffer:
                    for chunk in _translate_message(writer, message.headers, message.payload):
                        yield chunk
        except ParserError as exc:
            raise ProviderCallError(
                f"provider {self.provider.name!r} sent a broken event stream: {exc}",
                status=502,
                retryable=False,
            ) from exc
        except httpx.HTTPError as exc:
            raise ProviderCallError(
                f"provider {self.provider.name!r} stream cut: {type(exc).__name__}",
                status=502,
                retryable=False,
            ) from exc
        finally:
            await response.aclose()
        if not writer.stopped:
            raise ProviderCallError(
                f"provider {self.provider.name!r} ended its stream before messageStop",
                status=502,
                retryable=False,
            )
        for chunk in writer.finish():  # a stream without its metadata event still ends well
            yield chunk

    async def embeddings(self, body: dict[str, Any]) -> bytes:
        """Converse has no embeddings (Titan's are a separate InvokeModel API)."""
        raise UnsupportedError(f"provider {self.provider.name!r} (bedrock) has no embeddings")


def _translate_message(writer: ChunkWriter, headers: dict[str, Any], payload: bytes) -> list[bytes]:
    try:
        event = json.loads(payload) if payload else {}
    except ValueError:
        event = {}
    if not isinstance(event, dict):
        event = {}
    message_type = headers.get(":message-type", "event")
    if message_type == "exception":
        raise stream_exception(str(headers.get(":exception-type", "exception")), event)
    if message_type == "error":
        raise stream_exception(
            str(headers.get(":error-code", "error")), {"message": headers.get(":error-message", "")}
        )
    return writer.translate(str(headers.get(":event-type", "")), event)
