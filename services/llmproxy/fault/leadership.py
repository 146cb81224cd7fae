"""Keeps this instance's side of the leader lease: renew while held, try to take it otherwise.

A round every lease_s / 3: the holder renews (a refused renewal ends its term at once; Redis
errors let it run to the local deadline), anyone else tries to take the lease. The controller
reads `lease.held` on every change, and the runner steps a lost leader down at its next tick.
On shutdown the lease is released, so a follower takes over within a round instead of lease_s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from llmproxy.fault import metrics
from llmproxy.fault.errors import StoreUnavailableError
from llmproxy.fault.lease import Lease

log = logging.getLogger(__name__)


class Leadership:
    """The lease loop of one fault instance."""

    def __init__(
        self, lease: Lease, report: Callable[[bool], Awaitable[None]] | None = None
    ) -> None:
        self._lease = lease
        self._report = report
        self.interval_s = lease.lease_s / 3
        self._was_leader: bool | None = None

    async def round(self) -> bool:
        """Renew or try to take the lease once; whether this instance leads now."""
        lease = self._lease
        try:
            if lease.term is not None:
                if not await lease.renew():
                    log.warning("the leader lease was taken over")
            else:
                await lease.acquire()
        except StoreUnavailableError as exc:
            log.debug("lease round failed", extra={"error": str(exc)})
        if lease.term is not None and not lease.held:
            lease.drop()  # the local deadline passed: this term is over for us
        leading = lease.held
        if leading != self._was_leader:
            log.warning(
                "fault leadership changed",
                extra={"leader": leading, "token": lease.token, "holder": lease.holder},
            )
            if leading:
                metrics.LEADER_TERMS.inc()
            if self._report is not None:
                await self._report(leading)
        self._was_leader = leading
        metrics.LEADER.set(1 if leading else 0)
        return leading

    async def run(self) -> None:
        """Run rounds until cancelled; then give the lease up."""
        try:
            while True:
                await self.round()
                await asyncio.sleep(self.interval_s)
        finally:
            metrics.LEADER.set(0)
            with contextlib.suppress(StoreUnavailableError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._lease.release()
