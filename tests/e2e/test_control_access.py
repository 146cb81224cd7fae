"""Who may call what, on a whole stack: every control RPC of every service, for each credential,
through Envoy's control listener and on the service's own port.

Each test runs its own stack: the table calls every mutating RPC as every role. Its requests are
empty, so almost every allowed mutating call fails validation; those that do not (reload the
limits, stop no experiment, clear no stress) change nothing a later assertion reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import grpc
import httpx
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from llmproxy._gen.access.v1 import access_pb2
from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy.common.access import Role, Rule
from llmproxy.common.contract import SERVICES
from llmproxy.common.credentials import bearer_metadata
from llmproxy.config import StackConfig
from llmproxy.devstack.stack import Stack
from tests.harness.control import (
    CHAOS_AGENT,
    Answer,
    IssuedToken,
    admin_token,
    call,
    control_methods,
    control_target,
    create_control_token,
    rule_of,
    served_by,
    service_target,
    service_token,
)
from tests.harness.waiting import eventually

ENVOY = "envoy"  # the path through Envoy's control listener; the others are service names
CREDENTIALS = ("none", "viewer", "operator", "admin", "service")
REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
# An allowed call with an empty request may fail its validation or find nothing; these would
# mean it never reached the handler (a missing route, a crash, a token that could not be checked).
UNHANDLED = {
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
CONCURRENT_CALLS = 24  # enough to finish quickly, few enough not to queue behind two cores
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@asynccontextmanager
async def channels(config: StackConfig) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    """A channel per path: Envoy's control listener and each service's own port."""
    targets = {ENVOY: control_target(config), **{s: service_target(config, s) for s in SERVICES}}
    async with AsyncExitStack() as stack:
        yield {
            path: await stack.enter_async_context(grpc.aio.insecure_channel(target))
            for path, target in targets.items()
        }


async def people(stack: Stack, envoy: grpc.aio.Channel) -> dict[str, IssuedToken]:
    """A viewer, an operator and an admin control token, created with the bootstrap token."""
    issued = await asyncio.gather(
        *(create_control_token(envoy, admin_token(stack), r, f"e2e {r.label}") for r in Role)
    )
    return {token.role.label: token for token in issued}


# The roles, each including the ones before it; written out here rather than taken from
# llmproxy.common.access, so that the table checks that module too.
RANKS = {"viewer": 1, "operator": 2, "admin": 3}


def may_call(method: MethodDescriptor, credential: str) -> bool:
    """Whether the RPC's access option lets a caller with credential in."""
    access = method.GetOptions().Extensions[access_pb2.access]
    if credential == "service":
        return access.service
    needed = access_pb2.Role.Name(access.role).removeprefix("ROLE_").lower()
    return needed in RANKS and RANKS[credential] >= RANKS[needed]


@dataclass(frozen=True)
class Case:
    """One cell of the table: an RPC, the path it takes, the credential it presents."""

    method: MethodDescriptor
    path: str
    credential: str

    @property
    def rule(self) -> Rule:
        return rule_of(self.method)

    def wrong(self, answer: Answer) -> str | None:
        """Why answer is not what the rule says; None when it is."""
        if self.credential == "none":
            right = answer.code == grpc.StatusCode.UNAUTHENTICATED
            expected = "UNAUTHENTICATED"
        elif not may_call(self.method, self.credential):
            needs = f"needs {self.rule.describe()}"
            right = answer.code == grpc.StatusCode.PERMISSION_DENIED and needs in answer.details
            expected = f"PERMISSION_DENIED, saying it {needs}"
        else:
            right = answer.code not in REFUSED | UNHANDLED
            expected = "let in, and handled"
        return None if right else f"should be {expected}"

    def __str__(self) -> str:
        return f"{self.method.full_name} via {self.path} as {self.credential}"


def table() -> list[Case]:
    """Every control RPC x every path that reaches it x every credential."""
    return [
        Case(method, path, credential)
        for method in control_methods()
        for path in (ENVOY, *served_by(method))
        for credential in CREDENTIALS
    ]


async def answers(
    cases: Iterable[Case], paths: dict[str, grpc.aio.Channel], secrets: dict[str, str | None]
) -> list[Answer]:
    """Every case's answer, a few calls at a time."""
    limit = asyncio.Semaphore(CONCURRENT_CALLS)

    async def one(case: Case) -> Answer:
        async with limit:
            return await call(paths[case.path], case.method, secrets[case.credential])

    return await asyncio.gather(*(one(case) for case in cases))


def test_the_table_covers_every_service_and_the_chaos_agent_on_each_port() -> None:
    cases = table()
    methods = {c.method.full_name for c in cases}
    assert len(methods) == len(control_methods())
    services = {c.method.containing_service.full_name for c in cases}
    assert {f"llmproxy.{name}.v1" for name in SERVICES} == {s.rpartition(".")[0] for s in services}
    agent_paths = {c.path for c in cases if c.method.containing_service.full_name == CHAOS_AGENT}
    assert agent_paths == {ENVOY, *SERVICES}
    assert {c.credential for c in cases} == set(CREDENTIALS)


async def test_every_control_rpc_answers_each_credential_as_its_rule_says(
    own_stack: Stack,
) -> None:
    async with channels(own_stack.config) as paths:
        issued = await people(own_stack, paths[ENVOY])
        secrets: dict[str, str | None] = {
            "none": None,
            "service": service_token(own_stack),
            **{label: token.secret for label, token in issued.items()},
        }
        cases = table()
        got = await answers(cases, paths, secrets)
    wrong = [
        f"{case}: {answer} ({why})"
        for case, answer in zip(cases, got, strict=True)
        if (why := case.wrong(answer)) is not None
    ]
    assert not wrong, f"{len(wrong)} of {len(cases)} calls answered wrongly:\n" + "\n".join(wrong)


def probes() -> list[tuple[str, MethodDescriptor]]:
    """A viewer's read on every service, on its own port and through Envoy, and the chaos
    agent's on every port: where a token must stop working."""
    reads: dict[str, MethodDescriptor] = {}
    agent: MethodDescriptor | None = None
    for method in control_methods():
        rule = rule_of(method)
        if rule.role != Role.VIEWER or method.server_streaming:
            continue
        if method.containing_service.full_name == CHAOS_AGENT:
            agent = agent or method
        else:
            reads.setdefault(served_by(method)[0], method)
    assert agent is not None
    assert set(reads) == set(SERVICES)
    return [
        *((path, m) for name, m in reads.items() for path in (ENVOY, name)),
        *((name, agent) for name in SERVICES),
    ]


async def everywhere(paths: dict[str, grpc.aio.Channel], secrets: Iterable[str]) -> list[Answer]:
    """What each secret gets on every probe."""
    return await asyncio.gather(
        *(call(paths[path], method, secret) for secret in secrets for path, method in probes())
    )


def codes(answers: Iterable[Answer]) -> set[grpc.StatusCode]:
    return {answer.code for answer in answers}


def future(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int((time.time() + seconds) * 1e9))
    return stamp


async def test_revoked_rotated_out_and_expired_tokens_stop_working_everywhere(
    own_stack: Stack,
) -> None:
    cache_s = own_stack.config.control.token_cache_s
    admin = admin_token(own_stack)
    async with channels(own_stack.config) as paths:
        envoy = paths[ENVOY]
        stub = authz_pb2_grpc.AuthzServiceStub(envoy)
        revoked, rotated = await asyncio.gather(
            create_control_token(envoy, admin, Role.VIEWER, "to revoke"),
            create_control_token(envoy, admin, Role.VIEWER, "to rotate"),
        )
        lifetime_s = 4.0  # long enough for every service to see it valid first
        expiring = await create_control_token(
            envoy, admin, Role.VIEWER, "to expire", expire_time=future(lifetime_s)
        )
        ends = time.monotonic() + lifetime_s
        old = (revoked.secret, rotated.secret, expiring.secret)
        # Every service has seen each token valid, and caches that answer.
        warm = await everywhere(paths, old)
        assert codes(warm) == {grpc.StatusCode.OK}, warm
        await stub.RevokeControlToken(
            authz_pb2.RevokeControlTokenRequest(token_id=revoked.token_id, reason="e2e"),
            metadata=bearer_metadata(admin),
        )
        new = await stub.RotateControlToken(
            authz_pb2.RotateControlTokenRequest(token_id=rotated.token_id, grace_period_seconds=0),
            metadata=bearer_metadata(admin),
        )
        await eventually(
            lambda: everywhere(paths, old),
            lambda answers: codes(answers) == {grpc.StatusCode.UNAUTHENTICATED},
            what="revoked, rotated-out and expired tokens refused everywhere",
            # Within the services' token cache of the revocation, and of the expiry.
            timeout_s=max(cache_s, ends - time.monotonic()) + 2.0,
        )
        renewed = await everywhere(paths, [new.secret])
        assert codes(renewed) == {grpc.StatusCode.OK}, renewed


async def test_tokens_of_the_wrong_kind_are_refused_saying_so(own_stack: Stack) -> None:
    admin = admin_token(own_stack)
    envoy_settings = own_stack.config.envoy
    async with channels(own_stack.config) as paths:
        key = await authz_pb2_grpc.AuthzServiceStub(paths[ENVOY]).CreateKey(
            authz_pb2.CreateKeyRequest(tenant="e2e", name="not a control token"),
            metadata=bearer_metadata(admin),
        )
        control = await create_control_token(paths[ENVOY], admin, Role.ADMIN, "not an API key")
        found = await asyncio.gather(
            *(call(paths[path], method, key.secret) for path, method in probes())
        )
    assert codes(found) == {grpc.StatusCode.UNAUTHENTICATED}, found
    assert all("API key" in a.details for a in found), found
    assert all(key.secret not in a.details for a in found)
    url = f"http://{envoy_settings.host}:{envoy_settings.listener_port}/v1/chat/completions"
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            url, json=CHAT, headers={"authorization": f"Bearer {control.secret}"}
        )
        good = await client.post(url, json=CHAT, headers={"authorization": f"Bearer {key.secret}"})
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert "control token" in error["message"]
    assert "API key" in error["message"]
    assert control.secret not in response.text
    assert good.status_code == 200, good.text
