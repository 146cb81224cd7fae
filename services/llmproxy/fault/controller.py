"""The experiments' life cycle: create, start, end; the running set Envoy's runtime follows.

The running experiments are held in memory (what RTDS serves) and recorded in Redis (what
survives a restart). Safety orders every change: a start is recorded before its faults are
served (Redis down: nothing is applied), an end takes the faults away first and records after
(Redis down: the faults are gone anyway, and the record is written once Redis is back).

Only the leader (the holder of the lease, see lease.py) changes running experiments; on any
other instance start, stop and the emergency stop raise NotLeaderError (the API forwards them to
the leader) and the running set stays empty. Every change of the running set is also published
to Redis for the followers, which serve it to the Envoys connected to them (view.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

from llmproxy._gen.fault.v1 import fault_pb2
from llmproxy.common.chaos.registry import Instance
from llmproxy.common.timestamps import seconds, timestamp
from llmproxy.fault import metrics
from llmproxy.fault.agents import AGENT_KINDS, AgentError, Agents, affected_entry
from llmproxy.fault.errors import (
    FaultError,
    NotLeaderError,
    StoreUnavailableError,
    UnknownExperimentError,
    WrongStateError,
)
from llmproxy.fault.kill import Killer, KillPlan
from llmproxy.fault.lease import Lease
from llmproxy.fault.redis_pause import RedisPauser
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


def uses_agents(experiment: fault_pb2.Experiment) -> bool:
    """Whether the experiment stresses its service through the chaos agent (cpu, memory)."""
    return any(k in AGENT_KINDS for k in fault_kinds(experiment))


def pauses_redis(experiment: fault_pb2.Experiment) -> bool:
    """Whether the experiment makes Redis unavailable."""
    return "redis_unavailable" in fault_kinds(experiment)


class Controller:
    """Owns the running set; every API call and the runner go through it."""

    def __init__(
        self,
        store: ExperimentStore,
        known: Known,
        agents: Agents | None,
        clock: Callable[[], float],
        *,
        lease: Lease | None = None,
        killer: Killer | None = None,
        pauser: RedisPauser | None = None,
    ) -> None:
        self._store = store
        self._known = known
        self._agents = agents
        self._clock = clock
        self._lease = lease
        self._killer = killer
        self._pauser = pauser
        self._unsaved_running = False  # observe() or reach() since the last save_running()
        self._publish_pending = False
        self._running: dict[str, fault_pb2.Experiment] = {}
        self._unsaved: dict[str, fault_pb2.Experiment] = {}
        self._changed = asyncio.Condition()
        # Serializes changes of the running set: a start and an emergency stop never interleave.
        self._lock = asyncio.Lock()
        self.version = 0
        self.loaded = False

    # --- leadership ------------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this instance may change running experiments (always, without a lease)."""
        return self._lease is None or self._lease.held

    def _require_leader(self) -> None:
        if not self.leading:
            raise NotLeaderError(
                "this fault instance is not the leader: start, stop and the emergency stop "
                "go to the leader"
            )

    async def step_down(self) -> None:
        """Forget the running set (not ending anything: the next leader resumes it)."""
        async with self._lock:
            if self._pauser is not None:
                await self._pauser.stop()
            self._running.clear()
            self._unsaved.clear()
            if self._agents is not None:
                self._agents.forget()
            self.loaded = False
            self._publish_pending = False
            await self._notify()
        log.warning("no longer the fault leader")

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
        if self.leading and self.loaded:
            self._publish_pending = True
            await self.publish()

    async def publish(self) -> None:
        """Publish the running set for the followers, if a change is not published yet."""
        if not self._publish_pending or not self.leading:
            return
        try:
            await self._store.put_running(self.running())
        except FaultError as exc:
            log.warning("could not publish the running set; will retry", extra={"error": str(exc)})
            return
        self._publish_pending = False

    async def wait_change(self, seen: int) -> int:
        """Wait until the running set changed after version seen; the new version."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.version != seen)
        return self.version

    # --- restart ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Resume the running experiments recorded in Redis (those not yet over): after a
        restart, or on becoming the leader. Their deadlines are the recorded ones."""
        self._require_leader()
        now = self._clock()
        for experiment in await self._store.all():
            if experiment.state != RUNNING or experiment.name in self._running:
                continue
            if seconds(experiment.ended_at) > now:
                self._running[experiment.name] = experiment
                log.info("resumed a running experiment", extra={"experiment": experiment.name})
                if pauses_redis(experiment) and self._pauser is not None:
                    self._pauser.start(experiment.name, seconds(experiment.ended_at))
                if uses_agents(experiment) and self._agents is not None:
                    self._agents.resume(experiment)
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
        self._require_leader()
        async with self._lock:
            experiment, plan = await self._start(name)
        duration_s = experiment.duration.ToTimedelta().total_seconds()
        try:
            if uses_agents(experiment) and self._agents is not None:
                self._affected(name, await self._agents.apply(experiment, duration_s))
                await self.save_running()
            if plan is not None and self._killer is not None:
                await self._killer.kill(name, plan)
        except AgentError as exc:
            metrics.ROLLBACKS.labels("agent_error").inc()
            await self.end(name, ROLLED_BACK, f"agent_error: {exc}")
        return await self.get(name)

    async def _start(self, name: str) -> tuple[fault_pb2.Experiment, KillPlan | None]:
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
        # Before anything is recorded: a kill over the severity cap refuses the start.
        plan = await self._killer.plan(experiment) if self._killer is not None else None
        if pauses_redis(experiment) and self._pauser is None:
            raise WrongStateError("this fault service cannot pause Redis")
        now = self._clock()
        duration_s = experiment.duration.ToTimedelta().total_seconds()
        del experiment.affected[:]
        if plan is not None:
            experiment.affected.append(plan.affected)
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
        if pauses_redis(experiment) and self._pauser is not None:
            self._pauser.start(name, now + duration_s)
        for kind in experiment.faults_applied:
            metrics.FAULTS_APPLIED.labels(kind).inc()
        log.info("experiment started", extra={"experiment": name, "duration_s": duration_s})
        return self._copy(experiment), plan

    async def end(self, name: str, state: int, reason: str) -> fault_pb2.Experiment:
        """End a running experiment: its faults go at once, then the record follows."""
        async with self._lock:
            experiment = self._running.pop(name, None)
            if experiment is None:
                raise WrongStateError(f"experiment {name!r} is not running")
            # Before anything written to Redis: those writes wait while it is paused.
            if pauses_redis(experiment) and self._pauser is not None:
                await self._pauser.stop(name)
            await self._notify()
        log.info("experiment ended", extra={"experiment": name, "reason": reason})
        if uses_agents(experiment) and self._agents is not None:
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
        except NotLeaderError:
            # Deposed meanwhile: the record still says RUNNING and the new leader resumes it
            # (until its recorded end), which is the state everyone else sees too.
            log.warning(
                "deposed before recording the end of an experiment",
                extra={"experiment": experiment.name},
            )
            raise

    async def stop(self, name: str) -> fault_pb2.Experiment:
        """StopExperiment."""
        self._require_leader()
        if name not in self._running:
            if await self._store.get(name) is None:
                raise UnknownExperimentError(f"no experiment named {name!r}")
            raise WrongStateError(f"experiment {name!r} is not running")
        return await self.end(name, STOPPED, "stopped")

    async def emergency_stop(self, reason: str) -> list[str]:
        """Take every fault away at once, then record every running experiment as stopped
        and cancel every schedule."""
        self._require_leader()
        async with self._lock:
            stopped = sorted(self._running)
            ending = [self._running.pop(n) for n in stopped]
            await self._notify()  # RTDS pushes the empty layer now
        if self._pauser is not None:
            await self._pauser.stop()
        metrics.EMERGENCY_STOPS.inc()
        note = f"emergency stop: {reason}" if reason else "emergency stop"
        log.warning("emergency stop", extra={"stopped": stopped, "reason": reason})
        if self._agents is not None:
            for experiment in ending:
                if uses_agents(experiment):
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

    def _affected(self, name: str, instances: list[Instance]) -> None:
        """Add instances a running experiment reached to its `affected` (saved by
        save_running)."""
        experiment = self._running.get(name)
        if experiment is None:
            return
        for entry in map(affected_entry, instances):
            if entry not in experiment.affected:
                experiment.affected.append(entry)
                self._unsaved_running = True

    async def reach_new_instances(self) -> None:
        """Stress the instances of a stressed service that registered since its experiment
        started (a restarted instance, a new replica), or did not answer then, for the time
        left."""
        if self._agents is None:
            return
        now = self._clock()
        for experiment in self.running():
            if not uses_agents(experiment):
                continue
            reached = await self._agents.reach(experiment, seconds(experiment.ended_at) - now)
            if reached:
                log.info(
                    "stress applied to new instances",
                    extra={
                        "experiment": experiment.name,
                        "instances": [i.instance_id for i in reached],
                    },
                )
                self._affected(experiment.name, reached)

    async def save_running(self) -> None:
        """Record what the running experiments observed and reached since the last save, so
        any instance's GetExperiment shows it (under the lock: an end's record is never
        overwritten by a RUNNING one)."""
        if not self._unsaved_running:
            return
        self._unsaved_running = False
        async with self._lock:
            for experiment in list(self._running.values()):
                try:
                    await self._store.put(experiment)
                except FaultError:
                    return

    def observe(self, name: str, observed: fault_pb2.Observation) -> None:
        """Record the traffic seen during a running experiment (kept with its record)."""
        if name in self._running:
            self._running[name].observed.CopyFrom(observed)
            self._unsaved_running = True

    def known_services(self) -> Collection[str]:
        """The services a service target may name."""
        return self._known.services
