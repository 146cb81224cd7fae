"""The router's httpx transport over aiohttp's pool, and the provider calls made through it,
against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from llmproxy.router.providers import Provider, ProviderCallError
from llmproxy.router.providers.openai import OpenAIClient
from llmproxy.router.providers.pool import AiohttpPool
from llmproxy.router.server import new_http_transport


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path_qs,
            "body": body.decode(),
            "x_many": request.headers.getall("x-many", []),
            "authorization": request.headers.get("authorization"),
            "content_type": request.headers.get("content-type"),
        },
        status=int(request.query.get("status", "200")),
    )


async def _gzipped(request: web.Request) -> web.Response:
    return web.Response(body=gzip.compress(b"squeezed"), headers={"content-encoding": "gzip"})


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/echo")


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2)  # a provider slower than the timeouts under test
    return web.Response(text="late")


async def _stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"data: 1\n\n")
    await asyncio.sleep(float(request.query.get("pause", "0")))  # a stall mid-stream
    await response.write(b"data: 2\n\n")
    await response.write_eof()
    return response


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/echo", _echo)
    app.router.add_route("*", "/gzip", _gzipped)
    app.router.add_route("*", "/redirect", _redirect)
    app.router.add_route("*", "/slow", _slow)
    app.router.add_route("*", "/stream", _stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=new_http_transport()) as client:
        yield client


def test_the_router_transport_runs_on_aiohttps_pool() -> None:
    transport = new_http_transport()
    assert isinstance(transport._pool, AiohttpPool)  # type: ignore[attr-defined]


@pytest.fixture
async def transport() -> AsyncIterator[httpx.AsyncBaseTransport]:
    transport = new_http_transport()
    yield transport
    await transport.aclose()


def _provider(
    transport: httpx.AsyncBaseTransport, server: str, timeout_s: float = 5.0
) -> OpenAIClient:
    return OpenAIClient(transport, Provider("p", "openai", server, "sk-secret", timeout_s))


async def test_a_provider_call_sends_json_with_the_providers_key(
    server: str, transport: httpx.AsyncBaseTransport
) -> None:
    answer = json.loads(await _provider(transport, server).post("/echo", {"b": [1, 2]}))
    assert answer["method"] == "POST"
    assert json.loads(answer["body"]) == {"b": [1, 2]}
    assert answer["authorization"] == "Bearer sk-secret"
    assert answer["content_type"] == "application/json"


async def test_a_provider_answer_is_decoded_once(
    server: str, transport: httpx.AsyncBaseTransport
) -> None:
    assert await _provider(transport, server).post("/gzip", {}) == b"squeezed"


async def test_a_provider_error_status_keeps_its_body(
    server: str, transport: httpx.AsyncBaseTransport
) -> None:
    with pytest.raises(ProviderCallError) as raised:
        await _provider(transport, server).post("/echo?status=503", {"x": 1})
    assert raised.value.status == 503
    assert raised.value.retryable
    assert json.loads(raised.value.body)["path"] == "/echo?status=503"


async def test_a_provider_redirect_is_an_error_not_followed(
    server: str, transport: httpx.AsyncBaseTransport
) -> None:
    with pytest.raises(ProviderCallError) as raised:
        await _provider(transport, server).post("/redirect", {})
    assert raised.value.status == 302


async def test_a_slow_provider_times_out_at_its_timeout(
    server: str, transport: httpx.AsyncBaseTransport
) -> None:
    provider = _provider(transport, server, timeout_s=0.2)
    with pytest.raises(ProviderCallError) as raised:
        await provider.post("/slow", {})
    assert raised.value.status == 504
    # The same stalls mid-stream once the first bytes are in.
    chunks = await provider.post_stream("/stream?pause=2", {})
    assert await anext(chunks) == b"data: 1\n\n"
    with pytest.raises(ProviderCallError) as raised:
        await anext(chunks)
    assert raised.value.status == 504


async def test_an_unreachable_provider_is_a_503(transport: httpx.AsyncBaseTransport) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(ProviderCallError) as raised:
            await _provider(transport, f"http://127.0.0.1:{port}").post("/x", {})
    assert raised.value.status == 503


async def test_requests_and_answers_pass_unchanged(server: str, http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"{server}/echo?status=418&q=a%2Fb",
        content=b'{"x": 1}',
        headers=[("x-many", "1"), ("x-many", "2")],
    )
    assert response.status_code == 418
    assert response.reason_phrase == "I'm a Teapot"
    assert response.json() == {
        "method": "POST",
        "path": "/echo?status=418&q=a%2Fb",
        "body": '{"x": 1}',
        "x_many": ["1", "2"],
        "authorization": None,
        "content_type": "application/octet-stream",  # aiohttp's default for a bytes body
    }


async def test_compressed_bodies_are_decoded_once(server: str, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{server}/gzip")
    assert response.content == b"squeezed"


async def test_redirects_are_not_followed(server: str, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{server}/redirect")
    assert response.status_code == 302
    assert response.headers["location"] == "/echo"


async def test_a_slow_answer_is_a_read_timeout(server: str, http: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await http.get(f"{server}/slow", timeout=0.2)
    # The pool still works after a timed-out call.
    assert (await http.get(f"{server}/echo")).status_code == 200


async def test_a_closed_port_is_a_connect_error(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_streams_arrive_chunk_by_chunk(server: str, http: httpx.AsyncClient) -> None:
    async with http.stream("GET", f"{server}/stream?pause=0.3") as response:
        chunks = [chunk async for chunk in response.aiter_raw()]
    assert b"".join(chunks) == b"data: 1\n\ndata: 2\n\n"
    assert chunks[0] == b"data: 1\n\n"  # sent before the pause, so read before it


async def test_a_stall_mid_stream_is_a_read_timeout(server: str, http: httpx.AsyncClient) -> None:
    request = http.build_request("GET", f"{server}/stream?pause=2", timeout=0.3)
    response = await http.send(request, stream=True)
    chunks = response.aiter_raw()
    assert await anext(chunks) == b"data: 1\n\n"
    with pytest.raises(httpx.ReadTimeout):
        await anext(chunks)
    await response.aclose()


async def test_a_stream_left_early_does_not_spoil_the_pool(
    server: str, http: httpx.AsyncClient
) -> None:
    for _ in range(3):
        async with http.stream("GET", f"{server}/stream?pause=0.5") as response:
            async for _chunk in response.aiter_raw():
                break  # the client leaves after the first chunk
    assert (await http.get(f"{server}/echo")).json()["method"] == "GET"
