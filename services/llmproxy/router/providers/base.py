"""What every provider adapter shares: the provider's coordinates, errors, HTTP plumbing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from llmproxy.common.aws import AwsCredentials, resolve_credentials
from llmproxy.common.errors import LlmproxyError
from llmproxy.common.settings import ProviderSettings


class ProviderCallError(LlmproxyError):
    """One provider call failed; retryable says whether trying again or elsewhere may help."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        retryable: bool,
        body: bytes = b"",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.body = body
        self.retry_after_s = retry_after_s


class UnsupportedError(ProviderCallError):
    """The provider's API has no such operation (e.g. embeddings on Anthropic); retryable, so
    failover tries the model's next target. feature, when given, names what is missing for
    the client's error when no target has it."""

    def __init__(self, message: str, *, feature: str | None = None) -> None:
        super().__init__(message, status=400, retryable=True)
        self.feature = feature


LEGACY_COMPLETIONS = "legacy completions"
"""The feature POST /v1/completions needs: only OpenAI-compatible APIs have it."""


class NoLegacyCompletions:
    """The completions operations of an adapter whose provider API has no legacy completions
    (Anthropic, Gemini, Bedrock): each refuses with UnsupportedError."""

    provider: Provider

    def _no_completions(self) -> UnsupportedError:
        name, kind = self.provider.name, self.provider.kind
        return UnsupportedError(
            f"provider {name!r} ({kind}) has no {LEGACY_COMPLETIONS}", feature=LEGACY_COMPLETIONS
        )

    async def completions(self, body: dict[str, Any]) -> bytes:
        """Refused: the provider has no legacy completions."""
        raise self._no_completions()

    async def open_completions_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """Refused: the provider has no legacy completions."""
        raise self._no_completions()


@dataclass(frozen=True)
class Provider:
    """An enabled provider: where requests go (Envoy's egress path) and the key to send."""

    name: str
    kind: str
    base_url: str
    api_key: str | None
    timeout_s: float
    api_version: str | None = None
    """Azure OpenAI's api-version; None for every other kind."""
    origin_url: str = ""
    """The provider's own base URL (base_url may be Envoy's route to it): what SigV4 signs."""
    region: str | None = None
    """The AWS region of a bedrock provider."""
    aws_credentials: AwsCredentials | None = None
    """A bedrock provider's AWS credentials."""

    @classmethod
    def from_settings(
        cls, settings: ProviderSettings, environ: Mapping[str, str], base_url: str | None = None
    ) -> Provider:
        """Resolve the key (or AWS credentials) from environ, never from a request; base_url
        overrides the direct URL, e.g. with Envoy's egress route for this provider."""
        key = environ.get(settings.api_key_env) if settings.api_key_env else None
        credentials = resolve_credentials(environ) if settings.kind == "bedrock" else None
        return cls(
            settings.name,
            settings.kind,
            base_url or settings.base_url,
            key,
            settings.timeout_s,
            settings.api_version,
            origin_url=settings.base_url,
            region=settings.region,
            aws_credentials=credentials,
        )


async def refusal_body(response: httpx.Response) -> bytes:
    """The body of a streamed answer that refused the call, read and closed; empty if it
    cannot be read (the status says enough)."""
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""
    finally:
        await response.aclose()


class ProviderClient(Protocol):
    """One provider, answering in OpenAI's wire format whatever its own API is."""

    provider: Provider

    async def chat(self, body: dict[str, Any]) -> bytes:
        """A non-streaming chat completion: OpenAI chat.completion JSON bytes."""

    async def open_chat_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """A streaming chat completion: OpenAI SSE events, one `data: ...\\n\\n` each,
        ending with `data: [DONE]`. Fails before returning if the call fails."""

    async def embeddings(self, body: dict[str, Any]) -> bytes:
        """An embeddings call: OpenAI list JSON bytes."""

    async def completions(self, body: dict[str, Any]) -> bytes:
        """A non-streaming legacy completion: OpenAI text_completion JSON bytes; an
        UnsupportedError where the provider has no legacy completions."""

    async def open_completions_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """A streaming legacy completion: OpenAI SSE events as open_chat_stream's, the
        usage chunk always asked for."""


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None  # an HTTP date: too rare from LLM APIs to be worth parsing


def failure(provider: Provider, response: httpx.Response, body: bytes) -> ProviderCallError:
    """The error for a non-200 answer."""
    status = response.status_code
    # 408, 429 and 5xx are the provider's trouble: another try may answer. A 4xx is the request's.
    retryable = status in (408, 429) or status >= 500
    return ProviderCallError(
        f"provider {provider.name!r} answered {status}",
        status=status,
        retryable=retryable,
        body=body,
        retry_after_s=_retry_after(response),
    )


def transport_failure(provider: Provider, exc: httpx.HTTPError) -> ProviderCallError:
    """The error for a call that got no answer."""
    status = 504 if isinstance(exc, httpx.TimeoutException) else 503
    return ProviderCallError(
        f"provider {provider.name!r} unreachable: {type(exc).__name__}",
        status=status,
        retryable=True,
    )


# What httpx's client adds to every request, kept so providers see the same requests.
_CLIENT_HEADERS = {"accept": "*/*", "accept-encoding": "gzip, deflate", "user-agent": "llmproxy"}


class HttpProvider:
    """JSON over the router's one pooled httpx transport.

    Requests go to the transport itself rather than through an httpx.AsyncClient: the client's
    layers (auth flow, redirect loop, cookie jar, URL merging) do nothing for provider calls,
    which never follow redirects or keep cookies, yet cost CPU on every call.
    What the transport gives stays: httpx's requests, responses, errors and timeouts, and the
    OpenTelemetry span of every call.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport, provider: Provider) -> None:
        self._transport = transport
        self.provider = provider
        self._header_list = list({**_CLIENT_HEADERS, **self.headers()}.items())
        # Every operation (connect, read, write, pool wait) bounded by the provider's timeout.
        self._extensions = {"timeout": httpx.Timeout(provider.timeout_s).as_dict()}
        self._urls: dict[str, httpx.URL] = {}

    def headers(self) -> dict[str, str]:
        """Headers of every call (the key, in the provider's own header)."""
        headers = {"content-type": "application/json"}
        if self.provider.api_key:
            headers["authorization"] = f"Bearer {self.provider.api_key}"
        return headers

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:  # parsed once per path: the paths are the adapter's few constants
            url = self._urls[path] = httpx.URL(f"{self.provider.base_url}{path}")
        return url

    async def request_headers(self, path: str, content: bytes) -> list[tuple[str, str]]:
        """The headers of one call; a signing adapter adds the call's signature here."""
        return self._header_list

    async def _send(self, path: str, body: dict[str, Any]) -> httpx.Response:
        content = json.dumps(body).encode()
        request = httpx.Request(
            "POST",
            self._url(path),
            headers=await self.request_headers(path, content),
            content=content,
            extensions=self._extensions,
        )
        try:
            return await self._transport.handle_async_request(request)
        except httpx.HTTPError as exc:
            raise transport_failure(self.provider, exc) from exc

    async def post(self, path: str, body: dict[str, Any]) -> bytes:
        """POST body as JSON; the answer's bytes, or ProviderCallError."""
        response = await self._send(path, body)
        try:
            content = await response.aread()
        except httpx.HTTPError as exc:
            raise transport_failure(self.provider, exc) from exc
        finally:
            await response.aclose()
        if response.status_code != 200:
            raise failure(self.provider, response, content)
        return content

    async def post_stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """POST body and return the answer's raw bytes as they arrive; fails before the first
        byte if the call fails. Closing the iterator closes the upstream connection."""
        response = await self._send(path, body)
        if response.status_code != 200:
            raise failure(self.provider, response, await refusal_body(response))
        return self._relay(response)

    async def _relay(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise transport_failure(self.provider, exc) from exc
        finally:
            await response.aclose()
