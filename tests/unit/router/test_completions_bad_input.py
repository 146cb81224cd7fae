"""Random /v1/completions bodies never crash the router: each gets an answer or a 4xx."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmproxy._gen.router.v1 import openai_pb2
from llmproxy.router.requests import COMPLETION_FIELDS
from llmproxy.router.settings import ModelSettings, ModelTarget
from tests.unit.router.fakes import FakeClient
from tests.unit.router.fuzzing import Fuzzer, assert_openai_error, fuzz, fuzzer, json_values

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
def fuzz_servicer() -> Iterator[Fuzzer]:
    models = [
        ModelSettings(name="m", targets=[ModelTarget(provider="p", model="m")]),
        ModelSettings(name="anthropic-only", targets=[ModelTarget(provider="a", model="c")]),
    ]
    clients = {"p": FakeClient("p"), "a": FakeClient("a", kind="anthropic")}
    with fuzzer(models, clients) as running:
        yield running


@fuzz
@given(raw=bodies)
def test_random_bodies_get_an_answer_or_a_4xx(fuzz_servicer: Fuzzer, raw: bytes) -> None:
    request = openai_pb2.CreateCompletionRequest(body={"data": raw})
    reply = fuzz_servicer.call(fuzz_servicer.servicer.CreateCompletion, request)
    if reply.status != 200:
        assert_openai_error(reply)
