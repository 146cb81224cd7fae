"""ChaosAgentService: the gRPC face of the stress engine, registered by every service's server.

Reached on each service's own gRPC port, not through Envoy: Envoy's control listener routes
`/llmproxy.fault.v1.` calls to the fault service only, so through it the agent answered is
always the fault service's own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable

import grpc

from llmproxy._gen.fault.v1 import agent_pb2, agent_pb2_grpc
from llmproxy.common.chaos.engine import StressEngine
from llmproxy.common.chaos.errors import InvalidStress, OverBudget
from llmproxy.common.chaos.registry import Instance
from llmproxy.common.chaos.requests import parse_apply, parse_experiment, to_message
from llmproxy.common.grpc_types import Context

log = logging.getLogger(__name__)

SERVICE_NAME: str = agent_pb2.DESCRIPTOR.services_by_name["ChaosAgentService"].full_name
TERMINATE_DELAY_S = 0.2
"""How long after answering Terminate the process ends: the answer gets out first."""
Terminator = Callable[[int], None]
"""Ends this process with a signal number (os.kill of our own pid)."""


def kill_self(signum: int) -> None:
    """Send signum to this process."""
    os.kill(os.getpid(), signum)


class ChaosAgentServicer(agent_pb2_grpc.ChaosAgentServiceServicer):
    """Applies, clears and lists the stresses of this process, and ends it on request."""

    def __init__(
        self,
        engine: StressEngine,
        identity: Instance | None = None,
        terminate: Terminator = kill_self,
    ) -> None:
        self._engine = engine
        self.identity = identity
        self._terminate = terminate

    async def ApplyStress(
        self, request: agent_pb2.ApplyStressRequest, context: Context
    ) -> agent_pb2.ApplyStressResponse:
        """Start (or replace) an experiment's stress; bad or over-cap requests are refused."""
        try:
            order = parse_apply(request)
            # Touching a large block of memory takes a moment: not on the event loop.
            active, replaced = await asyncio.to_thread(
                self._engine.apply, order.experiment, order.stress, order.duration_s
            )
        except InvalidStress as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except OverBudget as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        log.warning(
            "chaos stress applied",
            extra={
                "experiment": active.experiment,
                "stress": repr(active.stress),
                "duration_s": order.duration_s,
                "replaced": replaced,
            },
        )
        return agent_pb2.ApplyStressResponse(
            applied=to_message(active, time.monotonic()), replaced=replaced
        )

    async def ClearStress(
        self, request: agent_pb2.ClearStressRequest, context: Context
    ) -> agent_pb2.ClearStressResponse:
        """Undo one experiment's stress, or all of them for an empty name."""
        try:
            experiment = parse_experiment(request.experiment, required=False)
        except InvalidStress as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        cleared = await asyncio.to_thread(self._engine.clear, experiment)
        if cleared:
            log.warning(
                "chaos stress cleared", extra={"experiments": [c.experiment for c in cleared]}
            )
        now = time.monotonic()
        return agent_pb2.ClearStressResponse(cleared=[to_message(c, now) for c in cleared])

    async def GetStress(
        self, request: agent_pb2.GetStressRequest, context: Context
    ) -> agent_pb2.GetStressResponse:
        """List the stresses in effect with their time left."""
        now = time.monotonic()
        return agent_pb2.GetStressResponse(
            stresses=[to_message(a, now) for a in self._engine.active()]
        )

    async def Terminate(
        self, request: agent_pb2.TerminateRequest, context: Context
    ) -> agent_pb2.TerminateResponse:
        """End this process shortly after answering, if it is the instance named."""
        identity = self.identity
        if identity is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this process is not in the instance registry: it cannot be terminated",
            )
            raise AssertionError("unreachable")  # pragma: no cover - abort raised
        if request.instance_id != identity.instance_id:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"instance_id: this is {identity.instance_id}, not {request.instance_id!r}",
            )
        signum = signal.SIGTERM if request.graceful else signal.SIGKILL
        log.warning(
            "chaos: terminating this instance",
            extra={
                "experiment": request.experiment[:128],
                "instance_id": identity.instance_id,
                "signal": signum.name,
            },
        )
        asyncio.get_running_loop().call_later(TERMINATE_DELAY_S, self._terminate, signum)
        return agent_pb2.TerminateResponse(instance_id=identity.instance_id, pid=identity.pid)


def add_chaos_agent(
    server: grpc.aio.Server,
    engine: StressEngine | None = None,
    identity: Instance | None = None,
    terminate: Terminator = kill_self,
) -> tuple[StressEngine, ChaosAgentServicer]:
    """Serve ChaosAgentService on server; returns its engine, whose close() undoes every stress,
    and the servicer (its identity is set once the server's port is known)."""
    engine = engine or StressEngine()
    servicer = ChaosAgentServicer(engine, identity, terminate)
    agent_pb2_grpc.add_ChaosAgentServiceServicer_to_server(servicer, server)
    return engine, servicer
