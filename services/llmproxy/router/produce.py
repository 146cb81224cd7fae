"""Producing a flight: the provider call of each kind of request, whole or streamed, with
failover, its chunks into the flight, then its settlement (router/settle.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from llmproxy.router.cache.flights import Flight
from llmproxy.router.calls import Call, Failover
from llmproxy.router.prepared import PreparedRequest

# Settler.settle: account for a finished flight and cache its answer.
Settle = Callable[[PreparedRequest, Flight, str, float], Awaitable[None]]


class Producer:
    """Fills flights from the model's providers, through one Failover."""

    def __init__(self, failover: Failover, settle: Settle) -> None:
        self._failover = failover
        self._settle = settle

    async def produce(self, call: PreparedRequest, flight: Flight) -> None:
        """The provider call of a flight: chunks into the flight, then usage and cache."""
        started = time.perf_counter()
        model = call.model
        if call.stream:
            provider, events = await self._failover.run(
                model.targets,
                call.body,
                _STREAM_CALLS[call.kind],
                model.routing,
                hold=_released_at_end,
            )
            flight.provider = provider
            async for event in events:
                flight.append(event)
        else:
            provider, answer = await self._failover.run(
                model.targets, call.body, _ANSWER_CALLS[call.kind], model.routing
            )
            flight.provider = provider
            flight.append(answer)
        flight.finish()
        await self._settle(call, flight, provider, time.perf_counter() - started)


# The provider operation of each kind of request, whole or streamed (embeddings never stream).
_ANSWER_CALLS: Mapping[str, Call[bytes]] = {
    "chat": lambda c, b: c.chat(b),
    "completions": lambda c, b: c.completions(b),
    "embeddings": lambda c, b: c.embeddings(b),
}
_STREAM_CALLS: Mapping[str, Call[AsyncIterator[bytes]]] = {
    "chat": lambda c, b: c.open_chat_stream(b),
    "completions": lambda c, b: c.open_completions_stream(b),
}


async def _released_at_end(
    events: AsyncIterator[bytes], release: Callable[[], None]
) -> AsyncIterator[bytes]:
    """events, then release(): a stream's call stays in flight until it ends or is cancelled."""
    try:
        async for event in events:
            yield event
    finally:
        release()
