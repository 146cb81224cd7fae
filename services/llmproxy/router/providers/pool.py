"""The connection pool under the router's httpx client: aiohttp's, which costs less CPU.

A provider call through aiohttp's pool costs the router about half the CPU it costs through
httpx's own pool (httpcore on anyio; docs/benchmarks.md). The router keeps httpx's API and
client (requests, errors, timeouts, the OpenTelemetry instrumentation of
`httpx.AsyncHTTPTransport`): only the layer that moves bytes changes. `AiohttpPool` answers
httpcore's pool interface, so httpx's transport maps its errors to httpx's exceptions as it
does for its own pool.

Bytes pass through unchanged: no decompression here (httpx decodes `content-encoding` itself),
no redirects, no cookies kept, no proxies from the environment.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import aiohttp
import httpcore
import httpx
import yarl


def _url(url: httpcore.URL) -> yarl.URL:
    host = url.host.decode("ascii")
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    port = f":{url.port}" if url.port is not None else ""
    # The target is already percent-encoded by httpx: encoded=True keeps it as is.
    return yarl.URL(
        f"{url.scheme.decode('ascii')}://{host}{port}{url.target.decode('ascii')}", encoded=True
    )


def _timeout(extensions: Mapping[str, Any]) -> aiohttp.ClientTimeout:
    """httpx's per-operation timeouts: connect (pool wait included) and read (between chunks).

    No total: a stream may last as long as its chunks keep coming, as with httpx's own pool.
    """
    timeouts = extensions.get("timeout", {})
    return aiohttp.ClientTimeout(
        total=None, connect=timeouts.get("connect"), sock_read=timeouts.get("read")
    )


class _ResponseBody:
    """An aiohttp response's body as httpcore's stream: chunks as they arrive, then close."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # read to the end: the connection goes back to the pool
        else:
            self._response.close()  # left early: the connection cannot be reused


class AiohttpPool(httpcore.AsyncConnectionPool):
    """httpcore's pool interface over one aiohttp session (created on first use, in the loop)."""

    def __init__(self, max_connections: int) -> None:
        super().__init__(max_connections=max_connections)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
            )
        return self._session

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        """Send request; the response's body is read as the caller iterates its stream."""
        assert isinstance(request.stream, AsyncIterable)  # noqa: S101 - httpx's contract
        body = b"".join([chunk async for chunk in request.stream])
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers]
        try:
            response = await self._open_session().request(
                request.method.decode("ascii"),
                _url(request.url),
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=_timeout(request.extensions),
            )
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc
        return httpcore.Response(
            response.status,
            headers=list(response.raw_headers),
            content=_ResponseBody(response),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1"),
            },
        )

    async def aclose(self) -> None:
        """Close every connection."""
        if self._session is not None:
            await self._session.close()
        await super().aclose()


class LeanTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with `AiohttpPool` in place of its httpcore pool."""

    def __init__(self, max_connections: int) -> None:
        super().__init__(trust_env=False)
        # httpx's transport keeps its pool in _pool and only calls the pool interface on it.
        self._pool = AiohttpPool(max_connections)
