"""The fault control API (FaultService): experiments, their life cycle and the emergency stop.

Each method delegates to the Controller; FaultError subclasses become gRPC statuses with their
message: INVALID_ARGUMENT, ALREADY_EXISTS, NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE. Reads
and creations are answered by any instance from Redis; start, stop and the emergency stop are
forwarded to the leader when this instance is not it (forward.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from llmproxy._gen.fault.v1 import fault_pb2, fault_pb2_grpc
from llmproxy.common.grpc_types import Context
from llmproxy.fault.controller import Controller
from llmproxy.fault.errors import (
    ExperimentExistsError,
    FaultError,
    InvalidExperimentError,
    NotLeaderError,
    StoreUnavailableError,
    UnknownExperimentError,
    WrongStateError,
)
from llmproxy.fault.forward import LeaderForwarder
from llmproxy.fault.view import FaultView

log = logging.getLogger(__name__)
T = TypeVar("T")
# The requests and replies of the RPCs only the leader serves (StartExperiment, StopExperiment).
_NamedRequest = fault_pb2.StartExperimentRequest | fault_pb2.StopExperimentRequest
_ExperimentReply = TypeVar(
    "_ExperimentReply", fault_pb2.StartExperimentResponse, fault_pb2.StopExperimentResponse
)

_STATUS = {
    InvalidExperimentError: grpc.StatusCode.INVALID_ARGUMENT,
    ExperimentExistsError: grpc.StatusCode.ALREADY_EXISTS,
    UnknownExperimentError: grpc.StatusCode.NOT_FOUND,
    WrongStateError: grpc.StatusCode.FAILED_PRECONDITION,
    StoreUnavailableError: grpc.StatusCode.UNAVAILABLE,
    NotLeaderError: grpc.StatusCode.UNAVAILABLE,
}


async def _answer(call: Awaitable[T], context: Context) -> T:
    try:
        return await call
    except FaultError as exc:
        await context.abort(_STATUS.get(type(exc), grpc.StatusCode.INTERNAL), str(exc))
        raise  # pragma: no cover - abort raised


def _name(name: str) -> str:
    if not name:
        raise InvalidExperimentError("name: required")
    return name


class FaultServicer(fault_pb2_grpc.FaultServiceServicer):
    """Creates, starts and stops chaos experiments."""

    def __init__(
        self,
        controller: Controller,
        forwarder: LeaderForwarder | None = None,
        view: FaultView | None = None,
    ) -> None:
        self._controller = controller
        self._forwarder = forwarder
        self._view = view

    def _forwarding(self) -> LeaderForwarder | None:
        return None if self._controller.leading else self._forwarder

    async def ListExperiments(
        self, request: fault_pb2.ListExperimentsRequest, context: Context
    ) -> fault_pb2.ListExperimentsResponse:
        """Every experiment, newest first."""
        found = await _answer(self._controller.all(), context)
        return fault_pb2.ListExperimentsResponse(experiments=found)

    async def GetExperiment(
        self, request: fault_pb2.GetExperimentRequest, context: Context
    ) -> fault_pb2.GetExperimentResponse:
        """One experiment and its outcome."""
        found = await _answer(self._get(request.name), context)
        return fault_pb2.GetExperimentResponse(experiment=found)

    async def _get(self, name: str) -> fault_pb2.Experiment:
        return await self._controller.get(_name(name))

    async def CreateExperiment(
        self, request: fault_pb2.CreateExperimentRequest, context: Context
    ) -> fault_pb2.CreateExperimentResponse:
        """Record a new experiment (PENDING)."""
        created = await _answer(self._controller.create(request), context)
        log.info("experiment created", extra={"experiment": created.name})
        return fault_pb2.CreateExperimentResponse(experiment=created)

    async def StartExperiment(
        self, request: fault_pb2.StartExperimentRequest, context: Context
    ) -> fault_pb2.StartExperimentResponse:
        """Start a pending (or finished) experiment now."""
        return await self._on_leader(
            "StartExperiment", request, fault_pb2.StartExperimentResponse, context, self._start
        )

    async def _start(self, name: str) -> fault_pb2.Experiment:
        return await self._controller.start(_name(name))

    async def StopExperiment(
        self, request: fault_pb2.StopExperimentRequest, context: Context
    ) -> fault_pb2.StopExperimentResponse:
        """Stop a running experiment."""
        return await self._on_leader(
            "StopExperiment", request, fault_pb2.StopExperimentResponse, context, self._stop
        )

    async def _on_leader(
        self,
        method: str,
        request: _NamedRequest,
        reply: type[_ExperimentReply],
        context: Context,
        act: Callable[[str], Awaitable[fault_pb2.Experiment]],
    ) -> _ExperimentReply:
        # What only the leader does: forwarded to it from any other instance.
        forwarder = self._forwarding()
        if forwarder is not None:
            return await _answer(forwarder.call(method, request, reply, context), context)
        return reply(experiment=await _answer(act(request.name), context))

    async def _stop(self, name: str) -> fault_pb2.Experiment:
        return await self._controller.stop(_name(name))

    async def EmergencyStop(
        self, request: fault_pb2.EmergencyStopRequest, context: Context
    ) -> fault_pb2.EmergencyStopResponse:
        """Remove every fault everywhere now."""
        forwarder = self._forwarding()
        if forwarder is not None:
            try:
                return await forwarder.call(
                    "EmergencyStop", request, fault_pb2.EmergencyStopResponse, context
                )
            except NotLeaderError as exc:
                # No leader to be found (Redis down, or a takeover under way): whatever this
                # instance serves goes now; any leader cut off from Redis loses its lease and
                # its faults within lease_s.
                log.warning("emergency stop without a leader", extra={"error": str(exc)})
                if self._view is not None:
                    await self._view.suppress()
                return fault_pb2.EmergencyStopResponse()
        stopped = await _answer(self._controller.emergency_stop(request.reason[:200]), context)
        return fault_pb2.EmergencyStopResponse(stopped=stopped)
