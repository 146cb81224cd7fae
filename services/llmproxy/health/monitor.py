"""The loops that keep the registry true: probes, shared-state sync, call outcomes, DNS.

- Each provider is probed every interval by whichever instance takes that interval's lock in
  Redis, so the fleet probes it once per interval; results go to Redis for every instance.
- Every sync_interval_s each instance reads the shared state (probes, circuits, maintenance)
  and re-evaluates every provider; its own probes and reported outcomes apply at once.
- At startup, a provider nobody has probed yet (a fleet starting from nothing) is probed once;
  if that fails it is not enabled (probe.startup_required), with a log line saying why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any

from llmproxy.common.settings import ProviderSettings
from llmproxy.health import dns, metrics
from llmproxy.health.errors import StoreUnavailableError
from llmproxy.health.probe import ProbeRunner
from llmproxy.health.records import Outcome, ProbeResult, SharedState, Transition
from llmproxy.health.registry import Registry
from llmproxy.health.settings import HealthSettings
from llmproxy.health.state import ProviderStatus, evaluate
from llmproxy.health.store import HealthStore
from llmproxy.health.tasks import stop_if_cancelled

log = logging.getLogger(__name__)


class Monitor:
    """Probes providers, applies call outcomes and keeps registry in step with the store."""

    def __init__(
        self,
        registry: Registry,
        store: HealthStore,
        prober: ProbeRunner,
        settings: HealthSettings,
        *,
        instance: str,
        clock: Callable[[], float] = time.time,
        lookup: dns.Lookup = dns.system_lookup,
    ) -> None:
        self._registry = registry
        self._store = store
        self._prober = prober
        self._settings = settings
        self._instance = instance
        self._clock = clock
        self._lookup = lookup
        self._shared: dict[str, SharedState] = {name: SharedState() for name in registry.names()}
        self._probing: dict[str, asyncio.Task[ProbeResult]] = {}
        self._scheduled: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        probe = settings.probe
        # Enough results to replay the up/down hysteresis, and to show history.
        self._keep = max(probe.history, probe.unhealthy_after + probe.healthy_after + 1)
        self._probes_ttl_s = max(60.0, 20 * probe.interval_s)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve addresses, run the startup probes, read the shared state, start the loops."""
        await self.resolve_all()
        await self._startup_probes()
        await self.sync()
        self._spawn(self._every(self._settings.sync_interval_s, self.sync, "sync"))
        self._spawn(self._every(self._settings.dns_refresh_s, self.resolve_all, "dns"))
        for provider in self._registry.providers.values():
            self._spawn(self._probe_loop(provider))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(coroutine))

    async def aclose(self) -> None:
        """Stop every loop and probe."""
        tasks = [*self._tasks, *self._probing.values(), *self._scheduled]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _every(
        self, period_s: float, step: Callable[[], Coroutine[Any, Any, None]], name: str
    ) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                await step()
            except Exception:
                log.exception("health loop step failed", extra={"loop": name})
            stop_if_cancelled()

    # --- evaluation ------------------------------------------------------------------------

    def _refresh(self, name: str) -> ProviderStatus:
        provider = self._registry.providers[name]
        status = evaluate(provider, self._shared[name], self._settings, self._clock())
        self._registry.update(status)
        return self._registry.status(name)

    def _transitions(self, name: str, transitions: Sequence[Transition]) -> None:
        for transition in transitions:
            metrics.observe_transition(name, transition)
            log.warning(
                "circuit %s -> %s",
                transition.before,
                transition.after,
                extra={"provider": name, "reason": transition.reason},
            )

    async def sync(self) -> None:
        """Read every provider's shared state and re-evaluate it."""
        loaded = await self._store.load(self._registry.names(), self._clock())
        for name, (shared, transitions) in loaded.items():
            self._transitions(name, transitions)
            self._shared[name] = shared
            self._refresh(name)

    async def resolve_all(self) -> None:
        """Resolve every provider's host again."""
        providers = list(self._registry.providers.values())
        targets = await asyncio.gather(
            *(dns.resolve(p, self._registry.target(p.name), self._lookup) for p in providers)
        )
        for provider, target in zip(providers, targets, strict=True):
            self._registry.set_target(provider.name, target)

    # --- probes ----------------------------------------------------------------------------

    async def _probe_loop(self, provider: ProviderSettings) -> None:
        # Probes start every interval, whether the last one ended or not (up to max_in_flight):
        # a hanging provider must not slow its own detection down.
        interval = self._settings.probe.interval_s
        in_flight: set[asyncio.Task[None]] = set()
        next_at = time.monotonic()
        while True:
            next_at = max(next_at + interval, time.monotonic())
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            try:
                if (
                    self._registry.status(provider.name).enabled
                    and len(in_flight) < self._settings.probe.max_in_flight
                    # 0.9: an instance's next turn must find its own lock expired despite
                    # timer jitter, or the lead would hop between instances.
                    and await self._store.try_lock_probe(
                        provider.name, 0.9 * interval, self._instance
                    )
                ):
                    task = asyncio.create_task(self._scheduled_probe(provider))
                    for tracked in (in_flight, self._scheduled):
                        tracked.add(task)
                        task.add_done_callback(tracked.discard)
            except Exception:
                log.exception("probe scheduling failed", extra={"provider": provider.name})
            stop_if_cancelled()

    async def _scheduled_probe(self, provider: ProviderSettings) -> None:
        try:
            await self._probe_and_record(provider)
        except Exception:
            log.exception("probe failed unexpectedly", extra={"provider": provider.name})

    async def _probe_and_record(self, provider: ProviderSettings) -> ProbeResult:
        result = await self._prober.probe(provider, self._settings.probe_for(provider.name))
        await self._record_probe(provider.name, result)
        return result

    async def _record_probe(self, name: str, result: ProbeResult) -> None:
        metrics.observe_probe(name, result)
        await self._store.add_probe(name, result, self._keep, self._probes_ttl_s)
        # A probe is a trial call for a half-open circuit (and ignored otherwise).
        record, transitions = await self._store.record_outcomes(
            name, [Outcome(ok=result.ok, status=result.status, probe=True)], self._clock()
        )
        self._transitions(name, transitions)
        shared = self._shared[name]
        probes = (result, *shared.probes)[: self._keep]
        self._shared[name] = replace(shared, probes=probes, circuit=record)
        self._refresh(name)

    async def probe_now(self, name: str) -> tuple[ProbeResult, ProviderStatus]:
        """Probe name at once (joining a probe this instance already runs for it).

        A provider that was not enabled (failed startup probe) is enabled if it passes.
        """
        provider = self._registry.provider(name)
        task = self._probing.get(name)
        if task is None or task.done():
            task = asyncio.create_task(self._probe_and_record(provider))
            self._probing[name] = task
        result = await asyncio.shield(task)
        if result.ok and self._shared[name].admin.disabled_reason:
            await self._store.set_disabled(name, "")
            self._shared[name] = replace(
                self._shared[name], admin=replace(self._shared[name].admin, disabled_reason="")
            )
            log.info("provider enabled: ProbeNow passed", extra={"provider": name})
        return result, self._refresh(name)

    async def _startup_probes(self) -> None:
        names = self._registry.names()
        try:
            loaded = await self._store.load(names, self._clock())
        except StoreUnavailableError:
            loaded = {}
        fresh = [
            self._registry.providers[n] for n in names if n not in loaded or not loaded[n][0].probes
        ]
        results = await asyncio.gather(
            *(self._prober.probe(p, self._settings.probe_for(p.name)) for p in fresh)
        )
        for provider, result in zip(fresh, results, strict=True):
            await self._record_probe(provider.name, result)
            await self._startup_verdict(provider, result, loaded)

    async def _startup_verdict(
        self,
        provider: ProviderSettings,
        result: ProbeResult,
        loaded: Mapping[str, tuple[SharedState, list[Transition]]],
    ) -> None:
        was_disabled = provider.name in loaded and loaded[provider.name][0].admin.disabled_reason
        extra = {"provider": provider.name, "base_url": provider.base_url, "detail": result.detail}
        if result.ok:
            if was_disabled:
                await self._store.set_disabled(provider.name, "")
            log.info("startup probe passed", extra=extra)
        elif self._settings.probe.startup_required:
            await self._store.set_disabled(provider.name, f"startup probe failed: {result.detail}")
            log.warning(
                "provider %s not enabled: its startup probe failed (%s); ProbeNow enables it "
                "once it answers",
                provider.name,
                result.detail,
                extra=extra,
            )
        else:
            log.warning(
                "provider %s failed its startup probe (%s); enabled anyway "
                "(probe.startup_required is false)",
                provider.name,
                result.detail,
                extra=extra,
            )

    # --- passive health and maintenance ----------------------------------------------------

    async def report(self, outcomes: Mapping[str, Sequence[Outcome]]) -> None:
        """Feed reported call outcomes to each provider's circuit."""
        now = self._clock()
        for name, batch in outcomes.items():
            failed = sum(1 for outcome in batch if not outcome.ok)
            metrics.OUTCOMES.labels(name, "ok").inc(len(batch) - failed)
            metrics.OUTCOMES.labels(name, "failed").inc(failed)
            record, transitions = await self._store.record_outcomes(name, batch, now)
            self._transitions(name, transitions)
            self._shared[name] = replace(self._shared[name], circuit=record)
            self._refresh(name)

    async def set_maintenance(self, name: str, maintenance: bool, reason: str) -> ProviderStatus:
        """Drain name (or put it back) for every instance."""
        self._registry.provider(name)
        await self._store.set_maintenance(name, maintenance, reason)
        shared = self._shared[name]
        admin = replace(
            shared.admin, maintenance=maintenance, maintenance_reason=reason if maintenance else ""
        )
        self._shared[name] = replace(shared, admin=admin)
        log.warning(
            "provider %s %s",
            name,
            "drained for maintenance" if maintenance else "back from maintenance",
            extra={"provider": name, "reason": reason},
        )
        return self._refresh(name)
