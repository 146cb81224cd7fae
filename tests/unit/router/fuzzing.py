"""The router's fuzz harness: any JSON value, one servicer for all examples, and the check that
every request gets a body and a 200 or a 4xx, never a 5xx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from google.api import httpbody_pb2
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from llmproxy.common.contract import STATUS_HEADER
from llmproxy.router.service import OpenAIServicer
from llmproxy.router.settings import ModelSettings, ModelTarget, RouterSettings
from tests.unit.router.fakes import Context, FakeClient, MemoryCache

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

# Each example is a whole request; the servicer fixture is shared by the examples on purpose.
fuzz = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

Rpc = Callable[[Any, Any], AsyncIterator[httpbody_pb2.HttpBody]]


@dataclass(frozen=True)
class Reply:
    """What the client gets: the status Envoy would send, the whole body and its type."""

    status: int
    data: bytes
    content_type: str


class Fuzzer:
    """One event loop and one servicer for every example of a fuzz test."""

    def __init__(self, loop: asyncio.Runner, servicer: OpenAIServicer) -> None:
        self.loop = loop
        self.servicer = servicer

    def call(self, rpc: Rpc, request: Any, headers: dict[str, str] | None = None) -> Reply:
        """Send one request; assert it got a body and a 200, 400 or 404."""
        context = Context(headers)
        replies = self.loop.run(_collect(rpc(request, context)))
        assert replies, "every request gets a body"
        status = int(context.metadata.get(STATUS_HEADER, "200"))
        assert status in (200, 400, 404)
        return Reply(status, b"".join(r.data for r in replies), replies[0].content_type)


async def _collect(replies: AsyncIterator[httpbody_pb2.HttpBody]) -> list[httpbody_pb2.HttpBody]:
    return [r async for r in replies]


@contextmanager
def fuzzer(
    models: Sequence[ModelSettings] = (),
    clients: Mapping[str, FakeClient] | None = None,
) -> Iterator[Fuzzer]:
    """A Fuzzer over the given models and clients; by default model "m" on provider "p"."""
    with asyncio.Runner() as loop:
        models = models or [ModelSettings(name="m", targets=[ModelTarget(provider="p", model="m")])]
        clients = clients or {"p": FakeClient("p")}
        servicer = OpenAIServicer(models, clients, RouterSettings(), cache=MemoryCache())
        yield Fuzzer(loop, servicer)


def assert_openai_error(reply: Reply) -> None:
    """The body is an OpenAI invalid request error with a message."""
    error = json.loads(reply.data)["error"]
    assert error["message"]
    assert error["type"] == "invalid_request_error"
