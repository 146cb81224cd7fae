"""The provider health control API.

Probes come with a later issue; until then every provider is reported as not yet observed.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmproxy._gen.health.v1 import health_pb2, health_pb2_grpc
from llmproxy.common.grpc_types import Context
from llmproxy.router.settings import ProviderSettings


class ProviderHealthServicer(health_pb2_grpc.ProviderHealthServiceServicer):
    """Reports the providers requests may go to and what is known of their health."""

    def __init__(self, providers: Sequence[ProviderSettings]) -> None:
        self._providers = providers

    async def ListProviders(
        self, request: health_pb2.ListProvidersRequest, context: Context
    ) -> health_pb2.ListProvidersResponse:
        """List every provider with its last known state."""
        return health_pb2.ListProvidersResponse(
            providers=[
                health_pb2.Provider(
                    name=p.name,
                    kind=p.kind,
                    base_url=p.base_url,
                    state=health_pb2.PROVIDER_STATE_UNSPECIFIED,
                    reason="not probed yet",
                )
                for p in self._providers
            ]
        )
