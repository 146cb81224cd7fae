"""Calls to the chaos agents of every live instance of a service, for cpu and memory faults.

The instances come from the instance registry (common.chaos.registry), so a stress reaches every
process of the target service, on one machine or as pods on Kubernetes. One that registers while
the experiment runs (a restarted instance, a new replica) or did not answer at the start gets
the stress on the runner's next tick, for the time left (`reach`). The end clears every instance
ever sent the stress and every live one; Redis down, the ones sent it.

One agent stress per (experiment, kind): the agent keeps one stress per experiment id, so an
experiment with both a cpu and a memory fault uses `<name>:cpu` and `<name>:memory`. The agent
undoes each stress at its duration's end by itself, so a killed fault service leaves nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import grpc
from google.protobuf import duration_pb2
from redis.exceptions import RedisError

from llmproxy._gen.fault.v1 import agent_pb2, agent_pb2_grpc, fault_pb2
from llmproxy.common.chaos.registry import Instance, InstanceRegistry
from llmproxy.common.credentials import bearer_metadata
from llmproxy.fault.errors import FaultError

log = logging.getLogger(__name__)

AGENT_KINDS = ("cpu", "memory")
# An instance that does not answer is skipped and tried again on the next tick, not refused:
# a killed one stays in the registry until its entry expires.
UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

AgentRequest = agent_pb2.ApplyStressRequest | agent_pb2.ClearStressRequest
Send = Callable[[Instance, AgentRequest], Awaitable[None]]
"""Sends one request to an instance's agent; raises AgentUnreachable or AgentError."""


class AgentError(FaultError):
    """A chaos agent could not be reached or refused the stress; the message says which."""


class AgentUnreachable(AgentError):
    """A chaos agent did not answer (it may be gone): tried again later rather than refused."""


def stress_id(experiment: str, kind: str) -> str:
    """The agent's experiment id of one kind of stress of an experiment."""
    return f"{experiment}:{kind}"


def affected_entry(instance: Instance) -> str:
    """An experiment's record of an instance it reached: "<service> <instance id>"."""
    return f"{instance.service} {instance.instance_id}"


def stress_requests(
    experiment: fault_pb2.Experiment, remaining_s: float
) -> list[agent_pb2.ApplyStressRequest]:
    """The agent requests of the experiment's cpu and memory faults, lasting remaining_s."""
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(max(1, round(remaining_s * 1000)))
    found = []
    for fault in experiment.faults:
        kind = fault.WhichOneof("kind")
        if kind == "cpu":
            found.append(
                agent_pb2.ApplyStressRequest(
                    experiment=stress_id(experiment.name, kind),
                    cpu=agent_pb2.CpuStress(cores=fault.cpu.cores),
                    duration=duration,
                )
            )
        elif kind == "memory":
            found.append(
                agent_pb2.ApplyStressRequest(
                    experiment=stress_id(experiment.name, kind),
                    memory=agent_pb2.MemoryStress(megabytes=fault.memory.megabytes),
                    duration=duration,
                )
            )
    return found


class GrpcSend:
    """Send over gRPC to the instance's address, with the stack's service token."""

    def __init__(self, timeout_s: float, service_token: str) -> None:
        self._timeout_s = timeout_s
        # The agents take stresses from the stack's services (or an operator): the service token.
        self._metadata = bearer_metadata(service_token)

    async def __call__(self, instance: Instance, request: AgentRequest) -> None:
        """Send request; AgentUnreachable when it did not answer, AgentError when it refused."""
        try:
            async with grpc.aio.insecure_channel(instance.address) as channel:
                stub = agent_pb2_grpc.ChaosAgentServiceStub(channel)
                if isinstance(request, agent_pb2.ApplyStressRequest):
                    await stub.ApplyStress(
                        request, timeout=self._timeout_s, metadata=self._metadata
                    )
                else:
                    await stub.ClearStress(
                        request, timeout=self._timeout_s, metadata=self._metadata
                    )
        except grpc.aio.AioRpcError as exc:
            verb = "apply" if isinstance(request, agent_pb2.ApplyStressRequest) else "clear"
            error = AgentUnreachable if exc.code() in UNREACHABLE else AgentError
            raise error(
                f"chaos agent of {instance.service} instance {instance.instance_id} at "
                f"{instance.address} could not {verb} {request.experiment}: "
                f"{exc.code().name} {exc.details()}"
            ) from exc


class Agents:
    """Applies and clears experiments' stresses on every live instance of their service.

    Per experiment it remembers the instances sent the stress (to clear them, Redis down
    too) and those that took it (not sent it again). Calls for one experiment are serialized,
    so a tick's `reach` never stresses an instance after the end's `clear`.
    """

    def __init__(self, registry: InstanceRegistry, send: Send) -> None:
        self._registry = registry
        self._send = send
        self._sent: dict[str, dict[str, Instance | None]] = {}  # None: known from the record
        self._took: dict[str, set[str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _live(self, service: str) -> list[Instance]:
        try:
            return await self._registry.live(service)
        except (RedisError, OSError) as exc:
            raise AgentError(
                f"chaos agents of {service}: the instance registry cannot be read ({exc})"
            ) from exc

    async def _apply_to(
        self,
        experiment: fault_pb2.Experiment,
        remaining_s: float,
        instances: Sequence[Instance],
    ) -> list[tuple[Instance, AgentError | None]]:
        """Send every instance the stresses; each with its error, None where it took them."""
        name = experiment.name
        requests = stress_requests(experiment, remaining_s)
        sent = self._sent.setdefault(name, {})
        took = self._took.setdefault(name, set())

        async def one(instance: Instance) -> AgentError | None:
            sent[instance.instance_id] = instance  # before sending: a late answer is cleared too
            try:
                for request in requests:
                    await self._send(instance, request)
            except AgentError as exc:
                return exc
            took.add(instance.instance_id)
            return None

        errors = await asyncio.gather(*(one(i) for i in instances))
        return list(zip(instances, errors, strict=True))

    async def apply(self, experiment: fault_pb2.Experiment, remaining_s: float) -> list[Instance]:
        """Apply the experiment's cpu and memory faults for remaining_s on every live instance
        of its service; the instances that took them.

        AgentError when none is registered, none answers, or one refuses: the caller rolls the
        experiment back, and `clear` undoes what the others took.
        """
        service = experiment.target.service
        async with self._lock(experiment.name):
            self._sent[experiment.name] = {}
            self._took[experiment.name] = set()
            live = await self._live(service)
            if not live:
                raise AgentError(f"chaos agents of {service}: no live instance is registered")
            results = await self._apply_to(experiment, remaining_s, live)
        errors = [e for _, e in results if e is not None]
        refused = [e for e in errors if not isinstance(e, AgentUnreachable)]
        if refused:
            raise refused[0]
        if len(errors) == len(results):
            raise AgentError(
                f"chaos agents of {service}: none of the {len(live)} registered instances "
                f"answered ({errors[0]})"
            )
        for error in errors:
            log.warning("chaos agent unreachable; tried again", extra={"error": str(error)})
        return [i for i, e in results if e is None]

    async def reach(self, experiment: fault_pb2.Experiment, remaining_s: float) -> list[Instance]:
        """Apply the stresses of a running experiment, for remaining_s, to the live instances
        that have not taken them (registered since, or unreachable before); the instances that
        took them now. Never raises: an instance that does not answer is tried on the next
        call; one that refuses is logged and left alone."""
        name, service = experiment.name, experiment.target.service
        async with self._lock(name):
            took = self._took.get(name)
            if took is None or remaining_s <= 0:
                return []  # ended, or not applied by this instance
            try:
                live = await self._live(service)
            except AgentError as exc:
                log.debug("cannot look for new instances", extra={"error": str(exc)})
                return []
            newcomers = [i for i in live if i.instance_id not in took]
            if not newcomers:
                return []
            results = await self._apply_to(experiment, remaining_s, newcomers)
            for instance, error in results:
                if error is not None and not isinstance(error, AgentUnreachable):
                    log.warning("chaos agent refused a stress", extra={"error": str(error)})
                    took.add(instance.instance_id)  # not sent it again every tick
        return [i for i, e in results if e is None]

    def resume(self, experiment: fault_pb2.Experiment) -> None:
        """Take over a running experiment from its record (a new leader): the instances in
        its `affected` took the stress already, and `reach` goes to the others."""
        prefix = f"{experiment.target.service} "
        ids = {a.removeprefix(prefix) for a in experiment.affected if a.startswith(prefix)}
        self._took.setdefault(experiment.name, set()).update(ids)
        sent = self._sent.setdefault(experiment.name, {})
        for instance_id in ids:
            sent.setdefault(instance_id, None)

    def forget(self) -> None:
        """Drop what is known of every experiment (no longer the leader: the next one resumes
        them from their records)."""
        self._sent.clear()
        self._took.clear()

    async def clear(self, experiment: fault_pb2.Experiment) -> None:
        """Clear the experiment's stresses on every instance sent them and every live one;
        AgentError (after trying them all) naming those that could not be cleared."""
        name, service = experiment.name, experiment.target.service
        async with self._lock(name):
            self._took.pop(name, None)
            sent = self._sent.pop(name, {})
            try:
                live = await self._live(service)
            except AgentError as exc:
                # Redis down: the ones sent it are known; the others' agents end it on time.
                log.warning("clearing only the instances known", extra={"error": str(exc)})
                live = []
            targets = {i: s for i, s in sent.items() if s is not None}
            targets.update((i.instance_id, i) for i in live)
            requests = [
                agent_pb2.ClearStressRequest(experiment=stress_id(name, kind))
                for kind in AGENT_KINDS
            ]

            async def one(instance: Instance) -> None:
                for request in requests:
                    await self._send(instance, request)

            results = await asyncio.gather(
                *(one(i) for i in targets.values()), return_exceptions=True
            )
        self._locks.pop(name, None)
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, AgentError):
                raise error
        if errors:
            raise AgentError(
                f"chaos agents of {service}: {len(errors)} of {len(targets)} could not clear "
                f"the stress ({errors[0]})"
            )
