"""What the authz service needs in a local stack: its secrets, and a demo key for `make up`."""

from __future__ import annotations

import secrets
import time
from collections.abc import MutableMapping

import grpc

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy.common.contract import ACTOR_METADATA
from llmproxy.common.timestamps import timestamp
from llmproxy.config import StackConfig
from llmproxy.devstack.process import StartupError

DEMO_KEY_TTL_S = 24 * 3600


def ensure_secrets(environ: MutableMapping[str, str], config: StackConfig) -> list[str]:
    """Put a random HMAC secret, admin token and service token into environ where the user set
    none.

    Returns the variables it set. Keys hashed with a generated secret stop working when the
    stack stops, which is what a throwaway local stack wants; the service token is internal to
    the stack, so a new one each start costs nothing.
    """
    generated = []
    names = (
        config.services.authz.hmac_secret_env,
        config.control.admin_token_env,
        config.control.service_token_env,
    )
    for name in names:
        if not environ.get(name):
            environ[name] = secrets.token_urlsafe(32)
            generated.append(name)
    return generated


async def create_demo_key(config: StackConfig, admin_token: str) -> str:
    """Create a key for the demo tenant through the admin API; returns its secret."""
    authz = config.services.authz
    request = authz_pb2.CreateKeyRequest(
        tenant="demo",
        user="demo",
        name="make up demo key",
        expire_time=timestamp(time.time() + DEMO_KEY_TTL_S),
        labels={"created-by": "devstack"},
    )
    async with grpc.aio.insecure_channel(f"{authz.host}:{authz.grpc_port}") as channel:
        try:
            reply = await authz_pb2_grpc.AuthzServiceStub(channel).CreateKey(
                request,
                metadata=(
                    ("authorization", f"Bearer {admin_token}"),
                    (ACTOR_METADATA, "devstack"),
                ),
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            raise StartupError(f"could not create the demo API key: {exc.details()}") from exc
    return reply.secret
