"""The experiments' life cycle: create, start, end; the running set Envoy's runtime follows.

The running experiments are held in memory (what RTDS serves) and recorded in Redis (what
survives a restart). Safety orders every change: a start is recorded before its faults are
served (Redis down: nothing is applied), an end takes the faults away first and records after
(Redis down: the faults are gone anyway, and the record is written once Redis is back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

from llmproxy._gen.fault.v1 import fault_pb2
from llmproxy.common.timestamps import seconds, timestamp
from llmproxy.fault import metrics
from llmproxy.fault.agents import AgentError, Agents
from llmproxy.fault.errors import (
    StoreUnavailableError,
    UnknownExperimentError,
    WrongStateError,
)
from llmproxy.fault.runtime import key_prefix
from llmproxy.fault.store import ExperimentStore
from llmproxy.fault.validation import Known, validate

log = logging.getLogger(__name__)

PENDING = fault_pb2.EXPERIMENT_STATE_PENDING
RUNNING = fault_pb2.EXPERIMENT_STATE_RUNNING
COMPLETED = fault_pb2.EXPERIMENT_STATE_COMPLETED
STOPPED = fault_pb2.EXPERIMENT_STATE_STOPPED
ROLLED_BACK = fault_pb2.EXPERIMENT_STATE_ROLLED_BACK


def fault_kinds(experiment: fault_pb2.Experiment) -> list[str]:
    """The kinds of the experiment's faults, in order."""
    return [k for k in (f.WhichOneof("kind") for f in experiment.faults) if k]


class Controller:
    """Owns the running set; every API call and the runner go through it."""

    def __init__(
        self,
        store: ExperimentStore,
        known: Known,
        agents: Agents | None,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._known = known
        self._agents = agents
        self._clock = clock
        self._running: dict[str, fault_pb2.Experiment] = {}
        self._unsaved: dict[str, fault_pb2.Experiment] = {}
        self._changed = asyncio.Condition()
        # Serializes changes of the running set: a start and an emergency stop never interleave.
        self._lock = asyncio.Lock()
        self.version = 0
        self.loaded = False

    # --- the running set, for RTDS ---------------------------------------------------------

    def running(self) -> list[fault_pb2.Experiment]:
        """The running experiments (copies)."""
        return [self._copy(e) for e in self._running.values()]

    @staticmethod
    def _copy(experiment: fault_pb2.Experiment) -> fault_pb2.Experiment:
        copy = fault_pb2.Experiment()
        copy.CopyFrom(experiment)
        return copy

    async def _notify(self) -> None:
        self.version += 1
        metrics.EXPERIMENTS_ACTIVE.set(len(self._running))
        async with self._changed:
            self._changed.notify_all()

    async def wait_change(self, seen: int) -> int:
        """Wait until the running set changed after version seen; the new version."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.version != seen)
        return self.version

    # --- restart ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Resume the running experiments recorded in Redis (those not yet over)."""
        now = self._clock()
        for experiment in await self._store.all():
            if experiment.state != RUNNING or experiment.name in self._running:
                continue
            if seconds(experiment.ended_at) > now:
                self._running[experiment.name] = experiment
                log.info("resumed a running experiment", extra={"experiment": experiment.name})
            else:
                await self._finish(experiment, COMPLETED, "completed")
        self.loaded = True
        await self._notify()

    # --- the API ---------------------------------------------------------------------------

    async def create(self, request: fault_pb2.CreateExperimentRequest) -> fault_pb2.Experiment:
        """Validate and record a new PENDING experiment."""
        experiment = validate(request, self._known, timestamp(self._clock()))
        await self._store.create(experiment)
        return experiment

    async def get(self, name: str) -> fault_pb2.Experiment:
        """The experiment of that name (the live copy while it runs)."""
        if name in self._running:
            return self._copy(self._running[name])
        experiment = await self._store.get(name)
        if experiment is None:
            raise UnknownExperimentError(f"no experiment named {name!r}")
        return experiment

    async def all(self) -> list[fault_pb2.Experiment]:
        """Every experiment, newest first."""
        found = {e.name: e for e in await self._store.all()}
        found.update({n: self._copy(e) for n, e in self._running.items()})
        return sorted(found.values(), key=lambda e: (-seconds(e.created_at), e.name))

    def _conflict(self, experiment: fault_pb2.Experiment) -> str | None:
        kind = experiment.target.WhichOneof("kind")
        for other in self._running.values():
            if other.target.WhichOneof("kind") != kind:
                continue
            if kind == "service":
                if other.target.service == experiment.target.service:
                    return other.name
            elif key_prefix(other.target) == key_prefix(experiment.target):
                return other.name
        return None

    async def start(self, name: str) -> fault_pb2.Experiment:
        """Start an experiment now: record it RUNNING, then serve its faults."""
        async with self._lock:
            experiment = await self._start(name)
        duration_s = experiment.duration.ToTimedelta().total_seconds()
        if experiment.target.WhichOneof("kind") == "service" and self._agents is not None:
            try:
                await self._agents.apply(experiment, duration_s)
            except AgentError as exc:
                metrics.ROLLBACKS.labels("agent_error").inc()
                await self.end(name, ROLLED_BACK, f"agent_error: {exc}")
        return await self.get(name)

    async def _start(self, name: str) -> fault_pb2.Experiment:
        if name in self._running:
            raise WrongStateError(f"experiment {name!r} is already running")
        experiment = await self._store.get(name)
        if experiment is None:
            raise UnknownExperimentError(f"no experiment named {name!r}")
        if experiment.state == RUNNING:
            raise WrongStateError(f"experiment {name!r} is already running")
        other = self._conflict(experiment)
        if other is not None:
            raise WrongStateError(
                f"experiment {other!r} is running on the same target; stop it first"
            )
        now = self._clock()
        duration_s = experiment.duration.ToTimedelta().total_seconds()
        experiment.state = RUNNING
        experiment.started_at.CopyFrom(timestamp(now))
        experiment.ended_at.CopyFrom(timestamp(now + duration_s))
        experiment.end_reason = ""
        experiment.ClearField("observed")
        experiment.runs += 1
        del experiment.faults_applied[:]
        experiment.faults_applied.extend(fault_kinds(experiment))
        await self._store.put(experiment)  # Redis down: raises, nothing applied
        self._running[name] = experiment
        await self._notify()
        for kind in experiment.faults_applied:
            metrics.FAULTS_APPLIED.labels(kind).inc()
        log.info("experiment started", extra={"experiment": name, "duration_s": duration_s})
        return self._copy(experiment)

    async def end(self, name: str, state: int, reason: str) -> fault_pb2.Experiment:
        """End a running experiment: its faults go at once, then the record follows."""
        async with self._lock:
            experiment = self._running.pop(name, None)
            if experiment is None:
                raise WrongStateError(f"experiment {name!r} is not running")
            await self._notify()
        log.info("experiment ended", extra={"experiment": name, "reason": reason})
        if experiment.target.WhichOneof("kind") == "service" and self._agents is not None:
            try:
                await self._agents.clear(experiment)
            except AgentError as exc:
                # The agent undoes the stress at its deadline by itself; say so and go on.
                log.warning("could not clear agent stress", extra={"error": str(exc)})
        await self._finish(experiment, state, reason)
        return experiment

    async def _finish(self, experiment: fault_pb2.Experiment, state: int, reason: str) -> None:
        experiment.state = state  # type: ignore[assignment]
        experiment.end_reason = reason
        now = self._clock()
        if seconds(experiment.ended_at) > now:
            experiment.ended_at.CopyFrom(timestamp(now))
        try:
            await self._store.put(experiment)
        except StoreUnavailableError:
            # Written by flush_unsaved once Redis is back; until then a restart must not
            # resume it, which only this record could prevent: keep retrying.
            self._unsaved[experiment.name] = experiment
            log.warning("could not record the end of an experiment; will retry")

    async def stop(self, name: str) -> fault_pb2.Experiment:
        """StopExperiment."""
        if name not in self._running:
            if await self._store.get(name) is None:
                raise UnknownExperimentError(f"no experiment named {name!r}")
            raise WrongStateError(f"experiment {name!r} is not running")
        return await self.end(name, STOPPED, "stopped")

    async def emergency_stop(self, reason: str) -> list[str]:
        """Take every fault away at once, then record every running experiment as stopped
        and cancel every schedule."""
        async with self._lock:
            stopped = sorted(self._running)
            ending = [self._running.pop(n) for n in stopped]
            await self._notify()  # RTDS pushes the empty layer now
        metrics.EMERGENCY_STOPS.inc()
        note = f"emergency stop: {reason}" if reason else "emergency stop"
        log.warning("emergency stop", extra={"stopped": stopped, "reason": reason})
        if self._agents is not None:
            for experiment in ending:
                if experiment.target.WhichOneof("kind") == "service":
                    try:
                        await self._agents.clear(experiment)
                    except AgentError as exc:
                        log.warning("could not clear agent stress", extra={"error": str(exc)})
        for experiment in ending:
            await self._finish(experiment, STOPPED, note)
        await self._cancel_schedules(note)
        return stopped

    async def _cancel_schedules(self, note: str) -> None:
        # A scheduled experiment must not start minutes after an emergency stop. Best effort:
        # with Redis down nothing can start anyway (a start is recorded first).
        try:
            found = await self._store.all()
        except StoreUnavailableError:
            return
        for experiment in found:
            if experiment.HasField("start_time") and experiment.state in (PENDING, COMPLETED):
                await self._finish(experiment, STOPPED, note)

    async def flush_unsaved(self) -> None:
        """Retry recording ends that Redis missed."""
        for name, experiment in list(self._unsaved.items()):
            try:
                await self._store.put(experiment)
            except StoreUnavailableError:
                return
            del self._unsaved[name]

    def observe(self, name: str, observed: fault_pb2.Observation) -> None:
        """Record the traffic seen during a running experiment (kept with its record)."""
        if name in self._running:
            self._running[name].observed.CopyFrom(observed)

    def known_services(self) -> Collection[str]:
        """The services a service target may name."""
        return self._known.services
