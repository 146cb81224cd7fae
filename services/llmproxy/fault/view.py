"""What this instance serves to Envoy over RTDS: the same faults whichever instance Envoy asks.

The leader serves its own running set (the controller's, changed first on every start and
end) once it has loaded it. A follower serves the running set the leader published in Redis,
read every `follow_interval_s`, without the experiments whose recorded end has passed (a dead
leader's experiments do not outlive their deadline) and without anything once Redis could not
be read for `stale_after_s` (it cannot know what the leader ended meanwhile: fail safe, serve
none).
The version changes whenever what is served changes, and RTDS pushes it then.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from llmproxy._gen.fault.v1 import fault_pb2
from llmproxy.common.timestamps import seconds
from llmproxy.fault.controller import Controller
from llmproxy.fault.errors import FaultError
from llmproxy.fault.store import ExperimentStore

log = logging.getLogger(__name__)


class FaultView:
    """The running experiments this instance serves, and a version for their changes."""

    def __init__(
        self,
        controller: Controller,
        store: ExperimentStore,
        stale_after_s: float,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._controller = controller
        self._store = store
        self._stale_after_s = stale_after_s
        self._clock = clock
        self._monotonic = monotonic
        self._published: list[fault_pb2.Experiment] = []
        self._read_at = -math.inf
        self._served: tuple[bytes, ...] = ()
        self._changed = asyncio.Condition()
        self._suppressed: list[fault_pb2.Experiment] | None = None
        self.version = 0

    def _leads(self) -> bool:
        # A new leader serves the published set until it has loaded its own from the records.
        return self._controller.leading and self._controller.loaded

    def running(self) -> list[fault_pb2.Experiment]:
        """The experiments whose faults Envoy gets from this instance now."""
        if self._leads():
            return self._controller.running()
        if self._monotonic() - self._read_at > self._stale_after_s:
            return []
        if self._suppressed is not None:
            if self._suppressed == self._published:
                return []
            self._suppressed = None
        now = self._clock()
        return [e for e in self._published if seconds(e.ended_at) > now]

    async def refresh(self) -> None:
        """Read the published running set (followers only), then push if what is served
        changed."""
        if not self._leads():
            try:
                self._published = await self._store.get_running()
                self._read_at = self._monotonic()
            except FaultError as exc:
                log.debug("cannot read the published running set", extra={"error": str(exc)})
        await self.poke()

    async def poke(self) -> None:
        """Bump the version if what is served changed since the last push."""
        served = tuple(
            e.SerializeToString(deterministic=True)
            for e in sorted(self.running(), key=lambda e: e.name)
        )
        if served == self._served:
            return
        self._served = served
        self.version += 1
        async with self._changed:
            self._changed.notify_all()

    async def suppress(self) -> None:
        """Serve nothing until the leader publishes another running set (an emergency stop
        that no leader could be found for)."""
        self._suppressed = list(self._published)
        await self.poke()

    async def wait_change(self, seen: int) -> int:
        """Wait until what is served changed after version seen; the new version."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.version != seen)
        return self.version

    async def follow(self, interval_s: float) -> None:
        """Refresh every interval_s, and at once on every change of the controller's set."""
        relay = asyncio.get_running_loop().create_task(self._relay())
        try:
            while True:
                try:
                    await self.refresh()
                except Exception:
                    log.exception("fault view refresh failed")
                await asyncio.sleep(interval_s)
        finally:
            relay.cancel()

    async def _relay(self) -> None:
        seen = self._controller.version
        while True:
            seen = await self._controller.wait_change(seen)
            await self.poke()
