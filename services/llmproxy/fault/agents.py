"""Calls to the chaos agent every service runs (ChaosAgentService), for cpu and memory faults.

One agent stress per (experiment, kind): the agent keeps one stress per experiment id, so an
experiment with both a cpu and a memory fault uses `<name>:cpu` and `<name>:memory`. The agent
undoes each stress at its duration's end by itself, so a killed fault service leaves nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.protobuf import duration_pb2

from llmproxy._gen.fault.v1 import agent_pb2, agent_pb2_grpc, fault_pb2
from llmproxy.common.credentials import bearer_metadata
from llmproxy.fault.errors import FaultError

AGENT_KINDS = ("cpu", "memory")


class AgentError(FaultError):
    """A chaos agent could not be reached or refused the stress; the message says which."""


def stress_id(experiment: str, kind: str) -> str:
    """The agent's experiment id of one kind of stress of an experiment."""
    return f"{experiment}:{kind}"


class Agents:
    """Clients of the services' chaos agents, by service name."""

    def __init__(self, targets: Mapping[str, str], timeout_s: float, service_token: str) -> None:
        self._targets = dict(targets)
        # The agents take stresses from the stack's services (or an operator): the service token.
        self._metadata = bearer_metadata(service_token)
        self._timeout_s = timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, service: str) -> agent_pb2_grpc.ChaosAgentServiceAsyncStub:
        if service not in self._channels:
            self._channels[service] = grpc.aio.insecure_channel(self._targets[service])
        stub: agent_pb2_grpc.ChaosAgentServiceAsyncStub = agent_pb2_grpc.ChaosAgentServiceStub(
            self._channels[service]
        )
        return stub

    async def apply(self, experiment: fault_pb2.Experiment, remaining_s: float) -> None:
        """Apply the experiment's cpu and memory faults on its target service for remaining_s."""
        service = experiment.target.service
        duration = duration_pb2.Duration()
        duration.FromMilliseconds(max(1, round(remaining_s * 1000)))
        for fault in experiment.faults:
            kind = fault.WhichOneof("kind")
            if kind == "cpu":
                request = agent_pb2.ApplyStressRequest(
                    experiment=stress_id(experiment.name, kind),
                    cpu=agent_pb2.CpuStress(cores=fault.cpu.cores),
                    duration=duration,
                )
            elif kind == "memory":
                request = agent_pb2.ApplyStressRequest(
                    experiment=stress_id(experiment.name, kind),
                    memory=agent_pb2.MemoryStress(megabytes=fault.memory.megabytes),
                    duration=duration,
                )
            else:
                continue
            try:
                await self._stub(service).ApplyStress(
                    request, timeout=self._timeout_s, metadata=self._metadata
                )
            except grpc.aio.AioRpcError as exc:
                raise AgentError(
                    f"chaos agent of {service} refused {kind} stress: "
                    f"{exc.code().name} {exc.details()}"
                ) from exc

    async def clear(self, experiment: fault_pb2.Experiment) -> None:
        """Clear the experiment's stresses on its target service (errors: AgentError)."""
        service = experiment.target.service
        for kind in AGENT_KINDS:
            try:
                await self._stub(service).ClearStress(
                    agent_pb2.ClearStressRequest(experiment=stress_id(experiment.name, kind)),
                    timeout=self._timeout_s,
                    metadata=self._metadata,
                )
            except grpc.aio.AioRpcError as exc:
                raise AgentError(
                    f"chaos agent of {service} could not clear {kind} stress: "
                    f"{exc.code().name} {exc.details()}"
                ) from exc

    async def aclose(self) -> None:
        """Close every channel."""
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
