"""What the router calls after a response: reconcile the token reservation with actual usage.

Before a call, Envoy's rate limit check reserved the request's token estimate
(x-llmproxy-token-estimate) on every token limit; the reservation time came back to the router
in x-llmproxy-ratelimit-reserved-at. After the response (streamed ones included, once the
usage is known) the router hands the headers it received and the tokens actually used:

    client = RateLimitClient(f"{config.envoy.host}:{config.envoy.control_port}", service_token)
    await client.reconcile_tokens(request_headers, usage.total_tokens)

The router itself queues them in router/reconcile_batch.py, which sends many at once through
reconcile_batch (one ReconcileTokensBatch call).

Reconciliation is best effort: a failure is logged and leaves the reservation counted, which
errs on the safe side (the limit holds, the key is charged its estimate).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from llmproxy._gen.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from llmproxy.common.contract import RESERVED_AT_HEADER, TOKEN_ESTIMATE_HEADER
from llmproxy.common.credentials import bearer_metadata
from llmproxy.common.ratelimit_descriptors import header_value, token_descriptors
from llmproxy.common.settings import GRPC_BALANCED

log = logging.getLogger(__name__)


def reconcile_request(
    headers: Mapping[str, str], actual_tokens: int
) -> ratelimit_pb2.ReconcileTokensRequest | None:
    """The ReconcileTokens call for a request's headers, or None when nothing was reserved."""
    if actual_tokens < 0:
        raise ValueError(f"actual_tokens must not be negative, got {actual_tokens}")
    reserved_at = header_value(headers, RESERVED_AT_HEADER)
    estimate = header_value(headers, TOKEN_ESTIMATE_HEADER)
    if reserved_at is None or estimate is None:
        return None  # no token limit applied to the request
    try:
        reserved, at_ms = int(estimate), int(reserved_at)
    except ValueError:
        log.warning(
            "unparsable reservation headers; not reconciled",
            extra={"estimate": estimate, "reserved_at": reserved_at},
        )
        return None
    descriptors = token_descriptors(headers)
    if not descriptors or reserved < 0:
        return None
    when = Timestamp()
    when.FromMilliseconds(at_ms)
    return ratelimit_pb2.ReconcileTokensRequest(
        descriptors=[
            ratelimit_pb2.Descriptor(
                entries=[ratelimit_pb2.DescriptorEntry(key=k, value=v) for k, v in entries]
            )
            for entries in descriptors
        ],
        reserved_tokens=reserved,
        actual_tokens=actual_tokens,
        reserved_at=when,
    )


async def reconcile_tokens(
    stub: ratelimit_pb2_grpc.RateLimitControlServiceAsyncStub,
    headers: Mapping[str, str],
    actual_tokens: int,
    timeout_s: float = 1.0,
    metadata: Sequence[tuple[str, str]] = (),
) -> int:
    """Correct the reservation of the request with these headers; returns limits corrected.

    headers are the request headers the router received (gRPC metadata included); nothing is
    sent when the rate limiter reserved nothing. Never raises for an RPC failure (logged).
    """
    request = reconcile_request(headers, actual_tokens)
    if request is None:
        return 0
    try:
        reply = await stub.ReconcileTokens(request, timeout=timeout_s, metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        log.warning(
            "token reconciliation failed; the reservation stays counted",
            extra={"code": exc.code().name, "details": exc.details()},
        )
        return 0
    return int(reply.adjusted)


async def reconcile_batch(
    stub: ratelimit_pb2_grpc.RateLimitControlServiceAsyncStub,
    requests: Sequence[ratelimit_pb2.ReconcileTokensRequest],
    timeout_s: float = 1.0,
    metadata: Sequence[tuple[str, str]] = (),
) -> int:
    """Send many reconciliations in one ReconcileTokensBatch call; returns limits corrected.

    Unlike reconcile_tokens this raises grpc.aio.AioRpcError: the caller (the router's
    reconcile_batch.ReconcileBatcher) logs and counts failures per batch.
    """
    reply = await stub.ReconcileTokensBatch(
        ratelimit_pb2.ReconcileTokensBatchRequest(items=requests),
        timeout=timeout_s,
        metadata=metadata,
    )
    return int(reply.adjusted)


class RateLimitClient:
    """A channel to the rate limit control API (directly or through Envoy's control port)."""

    def __init__(self, target: str, service_token: str) -> None:
        self._channel = grpc.aio.insecure_channel(target, options=GRPC_BALANCED)
        # Reconciliation is for the stack's services only: the calls present the service token.
        self._metadata = bearer_metadata(service_token)
        self.stub: ratelimit_pb2_grpc.RateLimitControlServiceAsyncStub = (
            ratelimit_pb2_grpc.RateLimitControlServiceStub(self._channel)
        )

    async def reconcile_tokens(
        self, headers: Mapping[str, str], actual_tokens: int, timeout_s: float = 1.0
    ) -> int:
        """See the module function reconcile_tokens."""
        return await reconcile_tokens(self.stub, headers, actual_tokens, timeout_s, self._metadata)

    async def reconcile_batch(
        self, requests: Sequence[ratelimit_pb2.ReconcileTokensRequest], timeout_s: float = 1.0
    ) -> int:
        """See the module function reconcile_batch."""
        return await reconcile_batch(self.stub, requests, timeout_s, self._metadata)

    async def aclose(self) -> None:
        """Close the channel."""
        await self._channel.close()
