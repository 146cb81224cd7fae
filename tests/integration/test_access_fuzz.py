"""Fuzzed `authorization` metadata against live access interceptors: a clear refusal, never a crash.

authz and the rate limiter run in process on the session's Redis, the rate limiter asking authz
about control tokens as in a stack. Every example sends one call to a control RPC of each, with
metadata drawn from printable text (spaces included), values up to twelve kilobytes, several
entries, and `authorization-bin` bytes; the answer must be a refusal the interceptor gave
(UNAUTHENTICATED, PERMISSION_DENIED, or UNAVAILABLE while a token cannot be checked), never
UNKNOWN or INTERNAL, and both services must still answer a good call afterwards.

grpc refuses some metadata in the client before anything is sent (upper-case keys, values
outside printable ASCII): the strategies draw only what grpc sends, keys in lower case, text
values of printable ASCII and any bytes under `-bin` keys, so no example is filtered out. What
grpc's transport refuses on the server before any interceptor runs is the one other answer
allowed: RESOURCE_EXHAUSTED, for metadata over its size limit.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from llmproxy._gen.authz.v1 import authz_pb2
from llmproxy._gen.ratelimit.v1 import ratelimit_pb2
from llmproxy.authz.server import serve as serve_authz
from llmproxy.common.credentials import bearer_metadata
from llmproxy.common.settings import ControlSettings
from llmproxy.ratelimit.server import serve as serve_ratelimit
from tests.harness.configs import stack_config_data, write_config
from tests.harness.services import Served, served

Metadata = tuple[tuple[str, str | bytes], ...]

REFUSED = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAVAILABLE,
}
# grpc's server refuses metadata over its soft limit (8 KiB, then at random up to the hard
# limit of 16 KiB) before any interceptor sees the call; HTTP/2 adds the pseudo-headers, so
# below this many bytes of our entries the interceptor always answers.
METADATA_SOFT_LIMIT = 8192 - 512
ENTRY_OVERHEAD = 32  # HPACK's accounting adds this much to every entry
ADMIN = os.environ[ControlSettings().admin_token_env]  # tests/conftest.py sets it first


@dataclass(frozen=True)
class Target:
    """A control RPC on one of the two services, called with raw bytes either way."""

    service: str  # authz or ratelimit
    method: str
    request: bytes = b""


# A read (the good call after each example), a mutating call (whose refusal is audited) and
# the chaos agent every service serves.
GOOD = {
    "authz": Target("authz", "/llmproxy.authz.v1.AuthzService/ListKeys"),
    "ratelimit": Target("ratelimit", "/llmproxy.ratelimit.v1.RateLimitControlService/GetLimits"),
}
TARGETS = (
    *GOOD.values(),
    Target(
        "authz",
        "/llmproxy.authz.v1.AuthzService/CreateKey",
        authz_pb2.CreateKeyRequest(tenant="fuzz").SerializeToString(),
    ),
    Target(
        "ratelimit",
        "/llmproxy.ratelimit.v1.RateLimitControlService/ResetUsage",
        ratelimit_pb2.ResetUsageRequest(
            descriptor=ratelimit_pb2.Descriptor(
                entries=[ratelimit_pb2.DescriptorEntry(key="tenant", value="fuzz")]
            )
        ).SerializeToString(),
    ),
    Target("ratelimit", "/llmproxy.fault.v1.ChaosAgentService/GetStress"),
)

printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
short_text = st.text(printable, max_size=80)
# Long values repeat a drawn piece: hypothesis draws a few bytes of choice per character, and a
# twelve-kilobyte draw would overrun its buffer.
long_text = st.tuples(st.text(printable, min_size=1, max_size=24), st.integers(500, 12_288)).map(
    lambda drawn: (drawn[0] * (drawn[1] // len(drawn[0]) + 1))[: drawn[1]]
)
hex_id = st.text("0123456789abcdef", min_size=16, max_size=16)
# A token as the parser wants one (printable, no spaces), so that many examples get past it
# to the lookup: an unknown control token, an API key, a near-miss of a valid shape.
unspaced = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80)
token_like = st.one_of(
    unspaced,
    st.builds(lambda i, s: f"ct-llmp-{i}-{s}", hex_id, unspaced),
    st.builds(lambda i, s: f"sk-llmp-{i}-{s}", hex_id, unspaced),
    short_text,
    long_text,
)
scheme = st.sampled_from(["Bearer ", "bearer ", "BEARER ", "Bearer  ", " Bearer ", "Basic ", ""])
authorization = st.one_of(
    st.builds(str.__add__, scheme, token_like),
    st.builds(str.__add__, scheme, token_like).map(lambda v: f"{v} "),
    short_text,
    long_text,
)
entries = st.tuples(
    st.lists(authorization, max_size=3),
    st.lists(st.binary(max_size=2048), max_size=2),
    st.one_of(st.none(), short_text),
).map(
    lambda drawn: (
        *(("authorization", v) for v in drawn[0]),
        *(("authorization-bin", v) for v in drawn[1]),
        *((("x-llmproxy-actor", drawn[2]),) if drawn[2] is not None else ()),
    )
)


def metadata_bytes(metadata: Metadata) -> int:
    """The size grpc's limit counts, about: every key and value, and the per-entry overhead."""
    return sum(len(key) + len(value) + ENTRY_OVERHEAD for key, value in metadata)


class Pair:
    """authz, and a rate limiter that asks it about control tokens."""

    def __init__(self, authz: Served, ratelimit: Served) -> None:
        self.authz = authz
        self.ratelimit = ratelimit

    def __repr__(self) -> str:
        return f"Pair(authz=:{self.authz.port}, ratelimit=:{self.ratelimit.port})"

    def port_of(self, target: Target) -> int:
        return self.authz.port if target.service == "authz" else self.ratelimit.port


@pytest.fixture
async def pair(tmp_path: Path, redis_process: str) -> AsyncIterator[Pair]:
    """authz on a free port, then the rate limiter configured with that port."""
    data = stack_config_data(redis={"url": redis_process})
    data["services"]["authz"]["grpc_port"] = 0
    (tmp_path / "authz").mkdir()
    (tmp_path / "ratelimit").mkdir()
    async with AsyncExitStack() as stack:
        _, config = write_config(tmp_path / "authz", data)
        authz = await stack.enter_async_context(served(serve_authz(config)))
        data["services"]["authz"]["grpc_port"] = authz.port
        data["services"]["ratelimit"]["grpc_port"] = 0
        _, config = write_config(tmp_path / "ratelimit", data)
        ratelimit = await stack.enter_async_context(served(serve_ratelimit(config)))
        yield Pair(authz, ratelimit)


async def error_of(pair: Pair, target: Target, metadata: Metadata) -> grpc.aio.AioRpcError | None:
    """Call target presenting only metadata; its error, or None when it succeeded."""
    # Not the fixture's channels: those add the admin token to every call.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{pair.port_of(target)}") as bare:
        call = bare.unary_unary(target.method)  # bytes in, bytes out
        try:
            await call(target.request, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


@settings(
    max_examples=120,
    deadline=None,
    # The two services are started once for the whole run on purpose: a live server must
    # survive every example in turn.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(metadata=entries, target=st.sampled_from(TARGETS))
async def test_fuzzed_authorization_is_refused_clearly(
    pair: Pair, metadata: Metadata, target: Target
) -> None:
    error = await error_of(pair, target, metadata)
    assert error is not None, f"{target.method} let {metadata!r:.200} in"
    allowed = set(REFUSED)
    if metadata_bytes(metadata) > METADATA_SOFT_LIMIT:
        allowed.add(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert error.code() in allowed, (
        f"{target.method}: {error.code().name} {error.details()!r:.300} for {metadata!r:.300}"
    )
    assert error.details(), "a refusal says why"
    event(error.code().name)  # --hypothesis-show-statistics shows the mix of answers
    # Still serving: the same service answers a good call at once.
    assert await error_of(pair, GOOD[target.service], bearer_metadata(ADMIN)) is None


async def test_the_good_call_is_good_and_a_near_miss_is_refused(pair: Pair) -> None:
    """What the fuzz test leans on: the admin token opens every target, and is needed to."""
    for target in TARGETS:
        admitted = await error_of(pair, target, bearer_metadata(ADMIN))
        # CreateKey creates (no error), ResetUsage of an unknown limit may not be found.
        assert admitted is None or admitted.code() not in REFUSED, admitted
        refused = await error_of(pair, target, bearer_metadata(ADMIN[:-1]))
        assert refused is not None
        assert refused.code() in REFUSED
