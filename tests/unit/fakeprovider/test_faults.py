"""Fault knobs as a client sees them: errors, outages, resets, hangs and delays."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.harness.waiting import eventually

from .conftest import RunningProvider

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]


async def set_knobs(http: httpx.AsyncClient, **update: object) -> None:
    response = await http.put("/_fake/knobs", json=update)
    assert response.status_code == 200, response.text


async def test_error_rate_one_fails_every_call_with_error_status(
    http: httpx.AsyncClient, sdk: openai.AsyncOpenAI
) -> None:
    await set_knobs(http, error_rate=1, error_status=429)

    with pytest.raises(openai.RateLimitError):
        await sdk.chat.completions.create(model="fake-gpt", messages=HELLO)
    response = await http.get("/v1/models")

    assert response.status_code == 429
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_error_rate_is_reproducible_for_a_seed(http: httpx.AsyncClient) -> None:
    async def statuses() -> list[int]:
        return [(await http.get("/v1/models")).status_code for _ in range(20)]

    await set_knobs(http, error_rate=0.5, seed=7)
    first = await statuses()
    await set_knobs(http, seed=7)  # setting the seed restarts the sequence
    second = await statuses()

    assert first == second
    assert set(first) == {200, 500}


async def test_outage_503_answers_api_calls_but_not_health(
    http: httpx.AsyncClient, sdk: openai.AsyncOpenAI
) -> None:
    await set_knobs(http, outage="503")

    with pytest.raises(openai.InternalServerError) as caught:
        await sdk.models.list()

    assert caught.value.status_code == 503
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/_fake/knobs")).json()["outage"] == "503"


async def test_outage_reset_drops_the_connection(
    http: httpx.AsyncClient, sdk: openai.AsyncOpenAI
) -> None:
    await set_knobs(http, outage="reset")

    with pytest.raises(openai.APIConnectionError):
        await sdk.chat.completions.create(model="fake-gpt", messages=HELLO)
    with pytest.raises(httpx.TransportError):
        await http.get("/v1/models")

    await set_knobs(http, outage="none")
    assert (await http.get("/v1/models")).status_code == 200


async def test_outage_hang_holds_until_the_client_gives_up(http: httpx.AsyncClient) -> None:
    await set_knobs(http, outage="hang")

    with pytest.raises(httpx.ReadTimeout):
        await http.get("/v1/models", timeout=0.3)

    assert (await http.get("/healthz")).status_code == 200


async def test_outage_hang_ends_when_the_knob_changes(http: httpx.AsyncClient) -> None:
    await set_knobs(http, outage="hang")
    pending = asyncio.create_task(http.get("/v1/models"))
    await eventually(  # the request is in, and held
        lambda: http.get("/_fake/stats"),
        lambda stats: stats.json()["injected_errors"].get("outage_hang") == 1,
        what="the request held",
    )
    assert not pending.done()

    await set_knobs(http, outage="none")

    assert (await pending).status_code == 200


async def test_latency_delays_the_answer(http: httpx.AsyncClient) -> None:
    await set_knobs(http, latency_ms=200)

    started = time.perf_counter()
    response = await http.get("/v1/models")

    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.2


async def test_chunks_are_flushed_one_by_one_with_the_chunk_delay(http: httpx.AsyncClient) -> None:
    await set_knobs(http, chunk_delay_ms=100)
    body = {"model": "fake-gpt", "messages": HELLO, "stream": True}

    started = time.perf_counter()
    reads: list[bytes] = []
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        reads += [raw async for raw in response.aiter_raw()]
    elapsed = time.perf_counter() - started

    events = b"".join(reads).count(b"data: ")
    assert events >= 5
    assert elapsed >= 0.1 * (events - 1)
    # A buffered answer would arrive whole; a streamed one starts before [DONE] exists.
    assert b"[DONE]" not in reads[0]


async def test_seed_changed_in_place_restarts_the_sequence(
    http: httpx.AsyncClient, provider: RunningProvider
) -> None:
    async def statuses() -> list[int]:
        return [(await http.get("/v1/models")).status_code for _ in range(20)]

    await set_knobs(http, error_rate=0.5, seed=3)
    await statuses()
    provider.knobs.seed = 5  # as an embedding process would, without PUT
    in_place = await statuses()
    await set_knobs(http, seed=5)

    assert await statuses() == in_place
