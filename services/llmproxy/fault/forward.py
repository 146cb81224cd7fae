"""Forwards the calls that change running experiments from a follower to the leader.

Start, stop and the emergency stop must run on the leader (it owns the running set). A follower
that gets one calls the same method on the leader's address (from the lease), with the caller's
own credentials, so the leader checks (and audits) the caller as if called directly, and returns
its answer or its error. A forwarded call is never forwarded again: an instance that is no
longer the leader when it arrives answers UNAVAILABLE, and the client retries.
"""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from llmproxy.common.grpc_types import Context
from llmproxy.fault.errors import NotLeaderError, StoreUnavailableError
from llmproxy.fault.lease import Lease

M = TypeVar("M", bound=Message)

FORWARDED_HEADER = "x-llmproxy-forwarded-by"
PASSED_HEADERS = ("authorization", "x-request-id", "traceparent")
SERVICE = "llmproxy.fault.v1.FaultService"


class LeaderForwarder:
    """Calls FaultService methods on the current leader for this follower."""

    def __init__(self, lease: Lease, timeout_s: float) -> None:
        self._lease = lease
        self._timeout_s = timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def _leader_address(self) -> str:
        try:
            holder = await self._lease.current()
        except StoreUnavailableError as exc:
            holder = self._lease.last_seen  # Redis down: the leader we saw last
            if holder is None:
                raise NotLeaderError(f"{exc}: no fault leader known; no fault was changed") from exc
        if holder is None or holder.holder == self._lease.holder:
            raise NotLeaderError(
                "no fault leader right now (a takeover takes up to services.fault.lease_s); "
                "retry; no fault was changed"
            )
        return holder.address

    async def call(self, method: str, request: Message, reply: type[M], context: Context) -> M:
        """request to the leader's method; its reply, or its error raised as an abort."""
        incoming = dict(context.invocation_metadata() or ())
        if FORWARDED_HEADER in incoming:
            raise NotLeaderError("forwarded to an instance that is no longer the fault leader")
        address = await self._leader_address()
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        metadata: list[tuple[str, Any]] = [
            (k, v) for k, v in incoming.items() if k in PASSED_HEADERS
        ]
        metadata.append((FORWARDED_HEADER, self._lease.holder))
        stub: Any = channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply.FromString,
        )
        try:
            answer: M = await stub(request, metadata=metadata, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
            raise  # pragma: no cover - abort raised
        return answer

    async def aclose(self) -> None:
        """Close the channels to leaders."""
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
