"""Random request bodies never crash the router: each gets an answer or a 4xx OpenAI error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmproxy._gen.router.v1 import openai_pb2
from llmproxy.common.contract import STATUS_HEADER
from llmproxy.router.service import OpenAIServicer
from llmproxy.router.settings import ModelSettings, ModelTarget, RouterSettings
from tests.unit.router.fakes import FakeClient, MemoryCache

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
chat_like = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["m", "other", ""]) | json_values,
        "messages": st.lists(
            st.fixed_dictionaries({}, optional={"role": json_values, "content": json_values}),
            max_size=3,
        )
        | json_values,
        "stream": st.booleans() | json_values,
    },
)
bodies = (
    st.binary(max_size=64)
    | json_values.map(json.dumps).map(str.encode)
    | chat_like.map(json.dumps).map(str.encode)
)


class Context:
    def __init__(self) -> None:
        self.metadata: dict[str, str] = {}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata.update(metadata)


@pytest.fixture(scope="module")
def runner() -> Iterator[tuple[asyncio.Runner, OpenAIServicer]]:
    """One event loop and one servicer for every example."""
    with asyncio.Runner() as loop:
        model = ModelSettings(name="m", targets=[ModelTarget(provider="p", model="m")])
        servicer = OpenAIServicer(
            [model], {"p": FakeClient("p")}, RouterSettings(), cache=MemoryCache()
        )
        yield loop, servicer


async def answer(servicer: OpenAIServicer, raw: bytes) -> tuple[dict[str, str], list[Any]]:
    context = Context()
    request = openai_pb2.CreateChatCompletionRequest(body={"data": raw})
    replies = [r async for r in servicer.CreateChatCompletion(request, context)]  # type: ignore[arg-type]
    return context.metadata, replies


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(raw=bodies)
def test_random_bodies_get_an_answer_or_a_4xx(
    runner: tuple[asyncio.Runner, OpenAIServicer], raw: bytes
) -> None:
    loop, servicer = runner
    metadata, replies = loop.run(answer(servicer, raw))
    assert replies, "every request gets a body"
    status = int(metadata.get(STATUS_HEADER, "200"))
    assert status in (200, 400, 404)
    if status != 200:
        error = json.loads(replies[0].data)["error"]
        assert error["message"]
        assert error["type"] == "invalid_request_error"
