"""No secret leaves the place it belongs: after a stack has created, rotated, used and refused API
keys and control tokens, none of them (nor the stack's admin token, service token or HMAC
secret) is in any file the stack wrote, any service's metrics, Envoy's stats, the audit trail,
or any error the callers got back.

A secret counts as found when any 16 characters of it are: a log line that cuts a token short
leaks it as surely as one that prints it whole. The scan is shown to find a secret planted in
the stack's log folder, so that an empty result means something.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from google.protobuf.descriptor import MethodDescriptor

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy.common.access import Role
from llmproxy.common.contract import SERVICES
from llmproxy.common.credentials import bearer_metadata
from llmproxy.devstack.stack import Stack
from tests.harness.control import (
    Answer,
    admin_token,
    audit_records,
    call,
    control_methods,
    control_target,
    create_control_token,
    served_by,
    service_target,
    service_token,
)

WINDOW = 16  # characters of a secret that count as leaking it
CONCURRENT_CALLS = 24
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@dataclass(frozen=True)
class Secret:
    """A secret, by a name that says which, and the part of it that is secret."""

    name: str
    value: str = field(repr=False)

    def pieces(self) -> set[str]:
        """Every WINDOW characters of the secret part (a token's id before it is public)."""
        secret = self.value
        for prefix in ("ct-llmp-", "sk-llmp-"):
            if secret.startswith(prefix):  # <prefix><id>-<secret>
                secret = secret[len(prefix) :].partition("-")[2]
        assert len(secret) >= WINDOW, self.name
        return {secret[i : i + WINDOW] for i in range(len(secret) - WINDOW + 1)}


def leaks(secrets: Iterable[Secret], sources: Mapping[str, str]) -> list[str]:
    """`<secret> in <source>` for every secret some piece of which a source holds."""
    found = []
    for secret in secrets:
        pieces = secret.pieces()
        found.extend(
            f"{secret.name} in {where}"
            for where, text in sources.items()
            if any(piece in text for piece in pieces)
        )
    return found


def files(root: Path) -> dict[str, str]:
    """Every file under root, read as text whatever it holds (secrets are ASCII)."""
    return {
        str(path.relative_to(root)): path.read_bytes().decode("latin-1")
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


class Recorder:
    """The callers' side: every error message and refused response body they got back."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    async def grpc(self, awaitable: Awaitable[object]) -> None:
        try:
            await awaitable
        except grpc.aio.AioRpcError as exc:
            self.errors.append(f"{exc.code().name}: {exc.details()} {exc.debug_error_string()}")

    def http(self, response: httpx.Response) -> httpx.Response:
        if response.status_code != 200:
            self.errors.append(f"{response.status_code} {response.headers} {response.text}")
        return response


async def test_no_secret_is_logged_exported_audited_or_echoed(own_stack: Stack) -> None:
    config = own_stack.config
    environ = own_stack.environ
    admin = admin_token(own_stack)
    service = service_token(own_stack)
    secrets = [
        Secret("the admin token", admin),
        Secret("the service token", service),
        Secret("the HMAC secret", environ[config.services.authz.hmac_secret_env]),
    ]
    seen = Recorder()
    envoy = config.envoy
    chat_url = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
    async with grpc.aio.insecure_channel(control_target(config)) as channel:
        authz = authz_pb2_grpc.AuthzServiceStub(channel)
        as_admin = bearer_metadata(admin)
        key = await authz.CreateKey(
            authz_pb2.CreateKeyRequest(tenant="hygiene", name="scanned"), metadata=as_admin
        )
        other = await authz.CreateKey(
            authz_pb2.CreateKeyRequest(tenant="hygiene", name="revoked"), metadata=as_admin
        )
        rotated_key = await authz.RotateKey(
            authz_pb2.RotateKeyRequest(key_id=key.key.key_id, grace_period_seconds=3600),
            metadata=as_admin,
        )
        await authz.RevokeKey(
            authz_pb2.RevokeKeyRequest(key_id=other.key.key_id, reason="scan"), metadata=as_admin
        )
        viewer = await create_control_token(channel, admin, Role.VIEWER, "hygiene viewer")
        operator = await create_control_token(channel, admin, Role.OPERATOR, "hygiene operator")
        rotated = await authz.RotateControlToken(
            authz_pb2.RotateControlTokenRequest(token_id=operator.token_id), metadata=as_admin
        )
        secrets += [
            Secret("an API key", key.secret),
            Secret("a revoked API key", other.secret),
            Secret("a rotated API key", rotated_key.secret),
            Secret("a viewer token", viewer.secret),
            Secret("a rotated-out operator token", operator.secret),
            Secret("a rotated operator token", rotated.secret),
        ]
        one_off = viewer.secret[:-1] + ("A" if viewer.secret[-1] != "A" else "B")
        await use(
            own_stack,
            channel,
            seen,
            [
                viewer.secret,  # good for reads, refused for changes
                rotated.secret,  # an operator
                operator.secret,  # rotated out with no grace: unknown now
                service,
                key.secret,  # the wrong kind
                f"{viewer.secret} trailing",  # malformed: a space inside
                one_off,  # one character off
                "x" * 600,  # too long
            ],
        )
        # Tokens in requests: the service asking about one, a viewer trying to.
        for credential in (service, viewer.secret):
            await seen.grpc(
                authz.IntrospectToken(
                    authz_pb2.IntrospectTokenRequest(token=rotated.secret),
                    metadata=bearer_metadata(credential),
                )
            )
        async with httpx.AsyncClient(timeout=10) as client:
            statuses = []
            for credential in (rotated_key.secret, key.secret, other.secret, viewer.secret):
                response = await client.post(
                    chat_url, json=CHAT, headers={"authorization": f"Bearer {credential}"}
                )
                statuses.append(seen.http(response).status_code)
            # The new and (in its grace) the old secret work; a revoked key is refused (403), a
            # control token is no API key (401).
            assert statuses == [200, 200, 403, 401]
            exported = await exports(own_stack, client)
        audit = await audit_records(channel, viewer.secret)
    own_stack.stop()  # every log flushed, Redis's data written out

    written = files(own_stack.config_path.parent)
    assert any(name.startswith("run/logs/") for name in written)
    assert any("audit" in text for name, text in written.items() if name.endswith("authz.log"))
    sources = {
        **written,
        **exported,
        "the audit trail": "\n".join(str(r) for r in audit),
        "errors returned to callers": "\n".join(seen.errors),
    }
    assert len(audit) > 10
    assert len(seen.errors) > 10
    assert leaks(secrets, sources) == []

    # The scan finds a secret where one is: part of a token, in a log line of its own.
    planted = own_stack.workdir / "logs" / "planted.log"
    planted.write_text(f"refused token ...{viewer.secret[-20:]}\n")
    assert leaks(secrets, files(own_stack.config_path.parent)) == [
        "a viewer token in run/logs/planted.log"
    ]


async def use(
    stack: Stack, envoy: grpc.aio.Channel, seen: Recorder, credentials: Iterable[str]
) -> None:
    """Every control RPC with each credential, through Envoy and on every port serving it."""
    async with AsyncExitStack() as opened:
        paths = {"envoy": envoy}
        for name in SERVICES:
            target = service_target(stack.config, name)
            paths[name] = await opened.enter_async_context(grpc.aio.insecure_channel(target))
        limit = asyncio.Semaphore(CONCURRENT_CALLS)

        async def one(path: str, method: MethodDescriptor, credential: str) -> Answer:
            async with limit:
                return await call(paths[path], method, credential)

        answers = await asyncio.gather(
            *(
                one(path, method, credential)
                for method in control_methods()
                for path in ("envoy", *served_by(method))
                for credential in credentials
            )
        )
    # Whole messages: Answer's str() cuts them short.
    seen.errors.extend(
        f"{a.code.name}: {a.details}" for a in answers if a.code != grpc.StatusCode.OK
    )


async def exports(stack: Stack, client: httpx.AsyncClient) -> dict[str, str]:
    """Every service's /metrics and Envoy's /stats, by where they came from."""
    urls = {
        f"{name} /metrics": f"http://{s.host}:{s.metrics_port}/metrics"
        for name in SERVICES
        if (s := getattr(stack.config.services, name))
    }
    envoy = stack.config.envoy
    urls["envoy /stats"] = f"http://{envoy.host}:{envoy.admin_port}/stats"
    found = {}
    for where, url in urls.items():
        response = await client.get(url)
        assert response.status_code == 200, where
        found[where] = response.text
    return found
