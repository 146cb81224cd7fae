"""Calls to OpenAI-compatible providers over one pooled httpx client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from llmproxy.router.settings import ProviderSettings


class ProviderCallError(Exception):
    """One provider call failed; retryable says whether the next target should be tried."""

    def __init__(self, message: str, *, status: int, retryable: bool, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.body = body


@dataclass(frozen=True)
class Provider:
    """An enabled provider: where it is and the key to reach it with."""

    name: str
    base_url: str
    api_key: str | None
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: ProviderSettings, environ: Mapping[str, str]) -> Provider:
        """Resolve the provider's key from environ (never from the request)."""
        key = environ.get(settings.api_key_env) if settings.api_key_env else None
        return cls(settings.name, settings.base_url, key, settings.timeout_s)

    def headers(self) -> dict[str, str]:
        """Request headers for a call to this provider."""
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers


def _failure(provider: Provider, response: httpx.Response, body: bytes) -> ProviderCallError:
    status = response.status_code
    # 429 and 5xx are the provider's trouble: another target may answer. A 4xx is the request's.
    retryable = status == 429 or status >= 500
    return ProviderCallError(
        f"provider {provider.name!r} answered {status}",
        status=status,
        retryable=retryable,
        body=body,
    )


def _transport_failure(provider: Provider, exc: httpx.HTTPError) -> ProviderCallError:
    status = 504 if isinstance(exc, httpx.TimeoutException) else 503
    return ProviderCallError(
        f"provider {provider.name!r} unreachable: {type(exc).__name__}",
        status=status,
        retryable=True,
    )


class ProviderClient:
    """Sends chat completions to one provider through a shared, pooled httpx client."""

    def __init__(self, http: httpx.AsyncClient, provider: Provider) -> None:
        self._http = http
        self.provider = provider

    def _request(self, path: str, body: dict[str, Any]) -> httpx.Request:
        return self._http.build_request(
            "POST",
            f"{self.provider.base_url}{path}",
            content=json.dumps(body).encode(),
            headers=self.provider.headers(),
            timeout=self.provider.timeout_s,
        )

    async def chat(self, body: dict[str, Any]) -> bytes:
        """Send a non-streaming chat completion and return the provider's JSON bytes."""
        try:
            response = await self._http.send(self._request("/chat/completions", body))
        except httpx.HTTPError as exc:
            raise _transport_failure(self.provider, exc) from exc
        if response.status_code != 200:
            raise _failure(self.provider, response, response.content)
        return response.content

    async def open_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """Start a streaming chat completion; fails before the first byte if the call fails.

        Returns an iterator over the provider's raw SSE bytes as they arrive; closing it (or
        abandoning it) closes the upstream connection.
        """
        try:
            response = await self._http.send(self._request("/chat/completions", body), stream=True)
        except httpx.HTTPError as exc:
            raise _transport_failure(self.provider, exc) from exc
        if response.status_code != 200:
            content = await response.aread()
            await response.aclose()
            raise _failure(self.provider, response, content)
        return self._relay(response)

    async def _relay(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise _transport_failure(self.provider, exc) from exc
        finally:
            await response.aclose()
