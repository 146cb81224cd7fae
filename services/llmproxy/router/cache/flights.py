"""In-flight sharing: concurrent identical requests make one provider call and all see it.

A Flight runs one producer (the provider call, streaming or not) in a task and lets any number
of subscribers read its chunks from the start, while it runs and after. The producer is
cancelled when its last subscriber leaves early, so a client that disconnects still cancels the
upstream call unless someone else waits for the same answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any


class Flight:
    """One producer's chunks, readable by every subscriber from the first chunk."""

    def __init__(self, produce: Callable[[Flight], Coroutine[Any, Any, None]]) -> None:
        self.chunks: list[bytes] = []
        self.provider: str | None = None
        self.error: BaseException | None = None
        self.done = False  # the producer's task has ended
        self.complete = False  # every chunk is in; the producer may still be settling up
        # Readers waiting for the next chunk or the end; each has its own future, so a reader
        # cancelled while waiting leaves the others alone (a Condition's lock is not needed:
        # chunks are only appended from the one event loop).
        self._waiting: list[asyncio.Future[None]] = []
        self._subscribers = 0
        self._task = asyncio.create_task(self._run(produce))

    async def _run(self, produce: Callable[[Flight], Coroutine[Any, Any, None]]) -> None:
        try:
            await produce(self)
        except asyncio.CancelledError:
            self.error = ConnectionAbortedError("every client left")
        except Exception as exc:
            self.error = exc
        finally:
            self.done = True
            self._notify()

    def _notify(self) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if not waiter.done():  # a cancelled reader's future is done already
                waiter.set_result(None)

    async def _next_change(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        await waiter

    def append(self, chunk: bytes) -> None:
        """Called by the producer for each chunk it receives."""
        self.chunks.append(chunk)
        self._notify()

    def finish(self) -> None:
        """Called by the producer once the answer is whole: readers end now, before the
        producer's bookkeeping (usage, cache) that no client needs to wait for."""
        self.complete = True
        self._notify()

    @property
    def ended(self) -> bool:
        """Nothing more will be appended."""
        return self.complete or self.done

    async def wait_first(self, timeout_s: float | None = None) -> bool:
        """Wait until a chunk or the end arrives; False if timeout_s passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                while not (self.chunks or self.ended):
                    await self._next_change()
        except TimeoutError:
            return False
        return True

    def attach(self) -> None:
        """A client starts waiting for this flight's answer."""
        self._subscribers += 1

    def detach(self) -> None:
        """A client stops waiting; the last one to leave early cancels the producer."""
        self._subscribers -= 1
        if self._subscribers == 0 and not self.ended:
            self._task.cancel()

    async def read(self) -> AsyncIterator[bytes]:
        """Every chunk from the first; raises the producer's error after the last one.

        Call between attach() and detach().
        """
        async for batch in self.read_batches():
            for chunk in batch:
                yield chunk

    async def read_batches(self) -> AsyncIterator[list[bytes]]:
        """As read(), but every chunk that arrived since the last batch at once.

        Nothing waits for more chunks: a batch holds only what is already here, so a reader
        sends a fast provider's burst on in one step (one gRPC message, not one per event).
        """
        position = 0
        while True:
            while not self._has_news(position):
                await self._next_change()
            if position < len(self.chunks):
                batch = self.chunks[position:]
                position += len(batch)
                yield batch
            if self.ended and position == len(self.chunks):
                if self.error is not None:
                    raise self.error
                return

    def _has_news(self, position: int) -> bool:
        return len(self.chunks) > position or self.ended

    async def wait(self) -> None:
        """Wait for the producer to end (for tests and shutdown)."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._task)


class Flights:
    """The flights in progress, by cache key."""

    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}

    def join(
        self, key: str, produce: Callable[[Flight], Coroutine[Any, Any, None]]
    ) -> tuple[Flight, bool]:
        """The flight for key, started with produce if none runs; True when this call leads."""
        flight = self._flights.get(key)
        if flight is not None and not flight.done:
            return flight, False
        flight = Flight(produce)
        self._flights[key] = flight
        flight._task.add_done_callback(lambda _: self._forget(key, flight))
        return flight, True

    def _forget(self, key: str, flight: Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def __len__(self) -> int:
        return len(self._flights)
