"""kill_instance faults: pick a random healthy instance of a service and have its agent end it.

The victim comes from the instance registry (common.chaos.registry), and only among instances
whose gRPC health answers SERVING right now. Killing 1 of n healthy instances counts as 100/n
percent against the severity cap, so the last healthy instance (100%) only goes in a CRITICAL
experiment, which validation already requires to carry confirm_critical. The instance ends
itself (its agent's Terminate RPC, with the service token): the fault service needs neither the
victim's pid nor the same machine, so it works alike on Kubernetes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.exceptions import RedisError

from llmproxy._gen.fault.v1 import agent_pb2, agent_pb2_grpc, fault_pb2
from llmproxy.common.chaos.registry import Instance, InstanceRegistry
from llmproxy.common.credentials import bearer_metadata
from llmproxy.fault.agents import AgentError, affected_entry
from llmproxy.fault.errors import StoreUnavailableError, WrongStateError
from llmproxy.fault.severity import CAPS, severity_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KillPlan:
    """The instance to kill, and how."""

    victim: Instance
    graceful: bool
    healthy: int

    @property
    def affected(self) -> str:
        """The experiment's record of it: "<service> <instance id>"."""
        return affected_entry(self.victim)


def kill_fault(experiment: fault_pb2.Experiment) -> tuple[int, fault_pb2.KillInstanceFault] | None:
    """The experiment's kill_instance fault and its index, if it has one."""
    for index, fault in enumerate(experiment.faults):
        if fault.WhichOneof("kind") == "kill_instance":
            return index, fault.kill_instance
    return None


def check_share(field: str, service: str, healthy: int, severity: int) -> None:
    """WrongStateError naming field unless killing one of healthy instances fits severity."""
    if healthy == 0:
        raise WrongStateError(f"{field}: no healthy instance of {service} is registered")
    share = 100.0 / healthy
    cap = CAPS[severity].max_percent
    if healthy == 1 and severity != fault_pb2.SEVERITY_CRITICAL:
        raise WrongStateError(
            f"{field}: {service} has 1 healthy instance; killing the last one needs severity "
            "CRITICAL with confirm_critical"
        )
    if share > cap:
        raise WrongStateError(
            f"{field}: killing 1 of the {healthy} healthy {service} instances is {share:g}%, "
            f"over the {severity_name(severity)} severity cap of {cap:g}%"
        )


class Killer:
    """Plans and carries out kill_instance faults."""

    def __init__(
        self,
        registry: InstanceRegistry,
        timeout_s: float,
        service_token: str,
        choose: Callable[[Sequence[Instance]], Instance] = random.choice,
    ) -> None:
        self._registry = registry
        self._timeout_s = timeout_s
        self._metadata = bearer_metadata(service_token)
        self._choose = choose

    async def _serving(self, instance: Instance) -> bool:
        try:
            async with grpc.aio.insecure_channel(instance.address) as channel:
                # types-grpcio-health-checking declares HealthStub without its methods.
                stub: Any = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=self._timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def healthy(self, service: str) -> list[Instance]:
        """The registered instances of service that answer SERVING now."""
        try:
            registered = await self._registry.live(service)
        except RedisError as exc:
            raise StoreUnavailableError(
                f"Redis is unreachable, the instance registry cannot be read ({exc}); "
                "no fault was changed"
            ) from exc
        serving = await asyncio.gather(*(self._serving(i) for i in registered))
        return [i for i, ok in zip(registered, serving, strict=True) if ok]

    async def plan(self, experiment: fault_pb2.Experiment) -> KillPlan | None:
        """The victim of the experiment's kill_instance fault (None without one); the checks
        against the severity's cap fail with WrongStateError naming the field."""
        found = kill_fault(experiment)
        if found is None:
            return None
        index, fault = found
        service = experiment.target.service
        healthy = await self.healthy(service)
        check_share(f"faults[{index}].kill_instance", service, len(healthy), experiment.severity)
        return KillPlan(self._choose(healthy), fault.graceful, len(healthy))

    async def kill(self, experiment: str, plan: KillPlan) -> None:
        """Have the victim's agent end it (AgentError if it cannot be reached or refuses)."""
        victim = plan.victim
        request = agent_pb2.TerminateRequest(
            experiment=experiment, instance_id=victim.instance_id, graceful=plan.graceful
        )
        try:
            async with grpc.aio.insecure_channel(victim.address) as channel:
                await agent_pb2_grpc.ChaosAgentServiceStub(channel).Terminate(
                    request, timeout=self._timeout_s, metadata=self._metadata
                )
        except grpc.aio.AioRpcError as exc:
            raise AgentError(
                f"chaos agent of {victim.service} instance {victim.instance_id} at "
                f"{victim.address} refused Terminate: {exc.code().name} {exc.details()}"
            ) from exc
        log.warning(
            "chaos: instance terminated",
            extra={
                "experiment": experiment,
                "instance_id": victim.instance_id,
                "address": victim.address,
                "healthy_before": plan.healthy,
            },
        )
