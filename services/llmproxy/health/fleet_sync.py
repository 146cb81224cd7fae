"""Keeps every health instance's list of Envoys the same: this instance's in Redis, the others'
read back.

Each round publishes the Envoys connected here (`fleet_store`) and reads every instance's; the
fleet's EDS streams push `envoy_replicas` again when the union changes. A round runs at once
when an Envoy connects or leaves here, and every INTERVAL_S otherwise: an Envoy that leaves an
instance is gone from every instance's list within INTERVAL_S, and one whose instance died
(no goodbye) within TTL_S, by which time it has reconnected to another instance and is listed
by that one.

While Redis is unreachable this instance serves the Envoys connected to it only, as a lone
instance would (a warning, and `llmproxy_health_envoy_replicas_shared` 0), and tries Redis
again every round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from llmproxy.common.fallback import FallbackSwitch
from llmproxy.common.heartbeats import raise_if_cancelled
from llmproxy.health import metrics
from llmproxy.health.errors import StoreUnavailableError
from llmproxy.health.fleet import Fleet, Members
from llmproxy.health.fleet_store import FleetStore

log = logging.getLogger(__name__)

INTERVAL_S = 1.0
TTL_S = 4.0  # a few missed rounds, so that one slow round does not drop an instance's Envoys


async def _alone() -> dict[str, Members]:
    return {}


def _observe(fleet: Fleet, shared: bool) -> None:
    metrics.ENVOY_REPLICAS.labels("connected").set(len(fleet.connected()))
    metrics.ENVOY_REPLICAS.labels("served").set(len(fleet.members()))
    metrics.ENVOY_REPLICAS_SHARED.set(1 if shared else 0)


async def share_fleet(
    fleet: Fleet, store: FleetStore, interval_s: float = INTERVAL_S, ttl_s: float = TTL_S
) -> None:
    """Share fleet's Envoys with the other health instances until cancelled."""
    switch = FallbackSwitch(
        log=log,
        degraded_message="redis unreachable: envoy_replicas lists the Envoys connected to this "
        "health instance only",
        restored_message="redis reachable again: envoy_replicas lists the Envoys of every health "
        "instance",
        unavailable=(StoreUnavailableError,),
        probe_interval_s=interval_s,
    )
    changed = fleet.event(local=True)
    try:
        while True:
            changed.clear()  # before reading: a change during the round makes another one
            views = await switch.call(
                lambda: store.exchange(fleet.instance, fleet.connected(), ttl_s), _alone
            )
            raise_if_cancelled()
            fleet.set_others(views)
            _observe(fleet, shared=not switch.degraded)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await changed.wait()
    finally:
        fleet.forget(changed)
        # Out of the list at once rather than after TTL_S (best effort).
        with contextlib.suppress(StoreUnavailableError):
            await store.remove(fleet.instance)
