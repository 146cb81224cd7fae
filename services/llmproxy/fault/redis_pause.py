"""redis_unavailable faults: the stack's Redis stops answering, in pauses Redis ends itself.

`CLIENT PAUSE <ms> ALL` holds every client's commands (the issuing connection's too) until the
timeout, when Redis answers them again by itself: no pause outlives a dead fault service by
more than its timeout. Redis 7.0 holds even `CLIENT UNPAUSE` until the pause ends, so a single
pause for the whole run could not be stopped early, and it would hold up the leader's lease
renewals for as long. So the leader pauses in short slices: each request is pipelined as
[renew the lease, CLIENT PAUSE slice ALL] and sent as soon as the previous one returned, so
Redis holds it and runs it first when the current slice ends, renewing the lease and pausing
again before the other held clients run. Stopping is not sending the next slice (and an
UNPAUSE, which Redis runs right after the slice already queued): Redis answers again within a
slice of a stop, a rollback or the fault service's death. Key expiry is suspended while Redis
is paused; the renewal in every slice keeps the lease from running out meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from llmproxy.common.redis import AnyRedis
from llmproxy.fault.lease import Lease

log = logging.getLogger(__name__)


def slice_s(lease_s: float) -> float:
    """How long each pause lasts: well inside the lease, so a renewal lands in each one."""
    return min(1.0, lease_s / 4)


class RedisPauser:
    """Keeps the stack's Redis paused while one redis_unavailable experiment runs."""

    def __init__(
        self,
        redis: AnyRedis,
        lease: Lease | None,
        pause_slice_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._lease = lease
        self._slice_s = pause_slice_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.experiment: str | None = None
        self.slices = 0

    @property
    def active(self) -> bool:
        """Whether a pause loop runs."""
        return self._task is not None and not self._task.done()

    def start(self, experiment: str, until: float) -> None:
        """Pause Redis from now until `until` (clock time) for experiment."""
        if self._task is not None:
            self._task.cancel()
        self.experiment = experiment
        self._task = asyncio.get_running_loop().create_task(self._run(until))

    async def stop(self, experiment: str | None = None) -> None:
        """End the pauses (of experiment, or whichever runs); Redis answers within a slice."""
        task = self._task
        if task is None or (experiment is not None and experiment != self.experiment):
            return
        self._task = None
        self.experiment = None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            # Held until the slice in effect (and one already queued) ends, then ends pausing.
            async with asyncio.timeout(3 * self._slice_s + 1):
                await self._redis.execute_command("CLIENT", "UNPAUSE")
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning(
                "CLIENT UNPAUSE failed; pauses end by themselves", extra={"error": str(exc)}
            )

    async def _run(self, until: float) -> None:
        while True:
            remaining = until - self._clock()
            if remaining <= 0:
                return
            ms = max(1, round(min(self._slice_s, remaining) * 1000))
            try:
                await self._slice(ms)
            except (RedisError, OSError) as exc:
                log.warning("could not pause Redis", extra={"error": str(exc)})
                await asyncio.sleep(min(self._slice_s, 0.1))
                continue
            except _Deposed:
                log.warning("no longer the fault leader: not pausing Redis any more")
                return
            self.slices += 1

    async def _slice(self, ms: int) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            renewed = None
            if self._lease is not None:
                if self._lease.term is None:
                    raise _Deposed
                renewed = self._lease.queue_renew(pipe)
            pipe.execute_command("CLIENT", "PAUSE", str(ms), "ALL")
            results = await pipe.execute()
        if renewed is not None and not renewed(results[0]):
            raise _Deposed


class _Deposed(Exception):
    """The lease is gone: only the leader pauses Redis."""
