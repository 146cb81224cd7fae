"""The runner: starts experiments on schedule, ends them at expiry, rolls back on a breach.

One loop, every `tick_s`: end what expired, start what is due (start time, or the next slot of
its interval), stress the instances a cpu or memory fault has not reached yet (registered since
it started); and every `hypothesis_interval_s` read Envoy's client-listener stats once and
judge each running experiment's steady-state hypothesis over the last few seconds
(`WINDOW_S`): a breach ends it as ROLLED_BACK with the verdict as its reason, so a rollback
follows a breach within WINDOW_S + hypothesis_interval_s. Stats that cannot be read are no
verdict (never a rollback).

Only the leader runs experiments: on any other instance a tick does nothing, and an instance
that lost the lease forgets its running set (the next leader resumes it from Redis, with the
recorded deadlines; its hypotheses are judged from the takeover on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable

from llmproxy._gen.fault.v1 import fault_pb2
from llmproxy.common.timestamps import seconds
from llmproxy.fault import metrics
from llmproxy.fault.controller import COMPLETED, ROLLED_BACK, RUNNING, Controller
from llmproxy.fault.envoy_stats import StatsUnavailable, TrafficSample
from llmproxy.fault.errors import FaultError
from llmproxy.fault.hypothesis import SteadyState, judge
from llmproxy.fault.validation import DEFAULT_MIN_REQUESTS

log = logging.getLogger(__name__)

WINDOW_S = 3.0
SCHEDULE_EVERY_S = 1.0
Sampler = Callable[[], Awaitable[TrafficSample]]


def due(experiment: fault_pb2.Experiment, now: float) -> bool:
    """Whether a scheduled experiment should start now (pure).

    Without an interval: once, when PENDING and its start time has come (but not when its
    whole run would already be over, e.g. after a long outage). With an interval: each slot
    start_time + k * interval not yet run, while PENDING or COMPLETED; a stopped or rolled-back
    experiment is not restarted by the schedule.
    """
    if not experiment.HasField("start_time"):
        return False
    if experiment.state not in (fault_pb2.EXPERIMENT_STATE_PENDING, COMPLETED):
        return False
    start = seconds(experiment.start_time)
    duration = experiment.duration.ToTimedelta().total_seconds()
    if now < start:
        return False
    if not experiment.HasField("interval"):
        return experiment.runs == 0 and now < start + duration
    interval = experiment.interval.ToTimedelta().total_seconds()
    slot = start + math.floor((now - start) / interval) * interval
    if now >= slot + duration:
        return False  # this slot's run would be over already
    return experiment.runs == 0 or seconds(experiment.started_at) < slot


def steady_state(hypothesis: fault_pb2.SteadyStateHypothesis) -> SteadyState | None:
    """The hypothesis to judge, or None when it checks nothing."""
    ratio = hypothesis.min_success_ratio if hypothesis.HasField("min_success_ratio") else None
    p99 = hypothesis.max_p99_ms if hypothesis.HasField("max_p99_ms") else None
    if ratio is None and p99 is None:
        return None
    return SteadyState(ratio, p99, hypothesis.min_requests or DEFAULT_MIN_REQUESTS)


class Runner:
    """Drives the controller by the clock and by Envoy's stats."""

    def __init__(
        self,
        controller: Controller,
        sampler: Sampler,
        clock: Callable[[], float],
        tick_s: float,
        hypothesis_interval_s: float,
    ) -> None:
        self._controller = controller
        self._sampler = sampler
        self._clock = clock
        self._tick_s = tick_s
        self._hypothesis_interval_s = hypothesis_interval_s
        self._samples: deque[TrafficSample] = deque()
        self._first_sample: dict[str, TrafficSample] = {}
        self._last_schedule = -math.inf
        self._last_judgement = -math.inf

    async def run(self) -> None:
        """Run until cancelled; no error stops either loop.

        Judging has a loop of its own: the housekeeping writes to Redis, and while Redis does
        not answer (a redis_unavailable experiment, say) the hypotheses must still be judged
        and a breach still rolled back.
        """
        await asyncio.gather(
            self._forever(self.housekeeping, self._tick_s),
            self._forever(self.judge_due, self._tick_s),
        )

    @staticmethod
    async def _forever(step: Callable[[], Awaitable[None]], interval_s: float) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("runner step failed", extra={"step": step.__name__})
            await asyncio.sleep(interval_s)

    async def tick(self) -> None:
        """One round of both loops: housekeeping, then judging."""
        await self.housekeeping()
        await self.judge_due()

    async def judge_due(self) -> None:
        """Judge the hypotheses if hypothesis_interval_s has passed (the leader only)."""
        if not self._controller.leading or not self._controller.loaded:
            return
        now = self._clock()
        if now - self._last_judgement >= self._hypothesis_interval_s:
            self._last_judgement = now
            await self._judge()

    async def housekeeping(self) -> None:
        """Load, publish, flush, expire, schedule, stress new instances of a stressed service,
        and record what was observed and reached."""
        controller = self._controller
        if not controller.leading:
            if controller.loaded:
                await controller.step_down()
                self._samples.clear()
                self._first_sample.clear()
            return
        now = self._clock()
        if not controller.loaded:
            with contextlib.suppress(FaultError):
                await controller.load()
            if not controller.loaded:
                return
        await controller.publish()
        await controller.flush_unsaved()
        for experiment in controller.running():
            if seconds(experiment.ended_at) <= now:
                with contextlib.suppress(FaultError):
                    await controller.end(experiment.name, COMPLETED, "completed")
        if now - self._last_schedule >= SCHEDULE_EVERY_S:
            self._last_schedule = now
            await self._schedule(now)
        await controller.reach_new_instances()
        await controller.save_running()

    async def _schedule(self, now: float) -> None:
        try:
            experiments = await self._controller.all()
        except FaultError:
            return  # Redis down: nothing starts (fail safe)
        for experiment in experiments:
            if experiment.state != RUNNING and due(experiment, now):
                try:
                    await self._controller.start(experiment.name)
                except FaultError as exc:
                    log.warning(
                        "scheduled start failed",
                        extra={"experiment": experiment.name, "error": str(exc)},
                    )

    async def _judge(self) -> None:
        running = self._controller.running()
        if not running:
            self._samples.clear()
            self._first_sample.clear()
            return
        try:
            sample = await self._sampler()
        except StatsUnavailable as exc:
            log.warning("cannot judge hypotheses", extra={"error": str(exc)})
            return
        self._samples.append(sample)
        while self._samples and sample.taken_at - self._samples[0].taken_at > WINDOW_S:
            self._samples.popleft()
        names = {e.name for e in running}
        for name in list(self._first_sample):
            if name not in names:
                del self._first_sample[name]
        for experiment in running:
            await self._judge_one(experiment, sample)

    async def _judge_one(self, experiment: fault_pb2.Experiment, sample: TrafficSample) -> None:
        first = self._first_sample.setdefault(experiment.name, sample)
        state = steady_state(experiment.hypothesis)
        whole_run = judge(state or SteadyState(None, None, 1), first, sample)
        # The window starts no earlier than the run: traffic before it is not evidence.
        window_start = max(self._samples[0], first, key=lambda s: s.taken_at)
        verdict = judge(state, window_start, sample) if state is not None else whole_run
        self._controller.observe(
            experiment.name,
            fault_pb2.Observation(
                requests=max(0, sample.requests - first.requests),
                success_ratio=whole_run.success_ratio or 0.0,
                p99_ms=sample.p99_ms or 0.0,
                verdict=verdict.reason,
            ),
        )
        if state is None or verdict.ok or verdict.breach is None:
            return
        log.warning(
            "hypothesis breached: rolling back",
            extra={"experiment": experiment.name, "reason": verdict.reason},
        )
        metrics.ROLLBACKS.labels(verdict.breach).inc()
        with contextlib.suppress(FaultError):
            await self._controller.end(
                experiment.name, ROLLED_BACK, f"{verdict.breach}: {verdict.reason}"
            )
