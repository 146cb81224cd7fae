"""Random /v1/completions bodies never crash the router: each gets an answer or a 4xx."""

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
from llmproxy.router.requests import COMPLETION_FIELDS
from llmproxy.router.service import OpenAIServicer
from llmproxy.router.settings import ModelSettings, ModelTarget, RouterSettings
from tests.unit.router.fakes import FakeClient, MemoryCache
from tests.unit.router.test_bad_input import Context, json_values

valid_prompts = (
    st.text(max_size=20)
    | st.lists(st.text(max_size=8), min_size=1, max_size=3)
    | st.lists(st.integers(0, 60000), min_size=1, max_size=4)
    | st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=3), min_size=1, max_size=3)
)
numbers = st.integers(-3, 3) | st.floats(-3, 3)
# Each documented field with values mostly of its type, some out of range.
fields = {
    "suffix": st.text(max_size=5),
    "max_tokens": st.integers(-1, 40),
    "temperature": st.sampled_from([0, 0.0, 0.7, 2]) | numbers,
    "top_p": numbers,
    "n": st.integers(0, 3),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
    "logprobs": st.integers(-1, 6),
    "echo": st.booleans(),
    "stop": st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=5),
    "presence_penalty": numbers,
    "frequency_penalty": numbers,
    "best_of": st.integers(0, 3),
    "logit_bias": st.dictionaries(st.integers(0, 99).map(str), st.integers(-101, 101), max_size=2),
    "user": st.text(max_size=5),
    "seed": st.integers(),
}
plausible = st.fixed_dictionaries(
    {"model": st.sampled_from(["m", "anthropic-only", "other"]), "prompt": valid_prompts},
    optional=fields,
)
# A plausible body with one field (documented or not) set to any JSON value, or one dropped.
mangled = st.tuples(
    plausible, st.sampled_from([*sorted(COMPLETION_FIELDS), "messages", "max_token"]), json_values
).map(lambda t: {**t[0], t[1]: t[2]})
dropped = st.tuples(plausible, st.sampled_from(["model", "prompt"])).map(
    lambda t: {k: v for k, v in t[0].items() if k != t[1]}
)
bodies = (
    st.binary(max_size=64)
    | json_values.map(json.dumps).map(str.encode)
    | (plausible | mangled | dropped).map(json.dumps).map(str.encode)
)


@pytest.fixture(scope="module")
def runner() -> Iterator[tuple[asyncio.Runner, OpenAIServicer]]:
    """One event loop and one servicer for every example."""
    with asyncio.Runner() as loop:
        models = [
            ModelSettings(name="m", targets=[ModelTarget(provider="p", model="m")]),
            ModelSettings(name="anthropic-only", targets=[ModelTarget(provider="a", model="c")]),
        ]
        clients = {"p": FakeClient("p"), "a": FakeClient("a", kind="anthropic")}
        servicer = OpenAIServicer(models, clients, RouterSettings(), cache=MemoryCache())
        yield loop, servicer


async def answer(servicer: OpenAIServicer, raw: bytes) -> tuple[dict[str, str], list[Any]]:
    context = Context()
    request = openai_pb2.CreateCompletionRequest(body={"data": raw})
    replies = [r async for r in servicer.CreateCompletion(request, context)]  # type: ignore[arg-type]
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
