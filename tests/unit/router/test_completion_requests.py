"""Validation of legacy completions bodies (POST /v1/completions)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmproxy.router.errors import InvalidRequestError
from llmproxy.router.requests import parse_completions_request


def parse(body: Any) -> dict[str, Any]:
    return parse_completions_request(json.dumps(body).encode())


def refusal(body: Any) -> dict[str, Any]:
    with pytest.raises(InvalidRequestError) as raised:
        parse(body)
    assert raised.value.status == 400
    error: dict[str, Any] = json.loads(raised.value.body())["error"]
    assert error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize(
    "prompt",
    ["Say this", "", ["one", "two"], [1, 2, 3], [[1, 2], [3]], [0], None],
)
def test_every_prompt_shape_of_the_api_is_accepted(prompt: Any) -> None:
    assert parse({"model": "m", "prompt": prompt})["prompt"] == prompt


def test_every_documented_field_is_accepted() -> None:
    body = {
        "model": "m",
        "prompt": "Say this",
        "suffix": "end",
        "max_tokens": 0,
        "temperature": 0,
        "top_p": 1,
        "n": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": 5,
        "echo": True,
        "stop": ["\n", "."],
        "presence_penalty": -2,
        "frequency_penalty": 1.5,
        "best_of": 1,
        "logit_bias": {"50256": -100},
        "user": "ann",
        "seed": -7,
    }
    assert parse(body) == body


def test_null_means_the_default() -> None:
    body = {"model": "m", "prompt": "x", "max_tokens": None, "stop": None, "best_of": None}
    assert parse(body) == body


def test_unknown_fields_are_named() -> None:
    error = refusal({"model": "m", "prompt": "x", "max_token": 5, "messages": []})
    assert error["code"] == "unknown_parameter"
    assert error["param"] == "max_token"  # the first, alphabetically
    assert "max_token" in error["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("suffix", 3),
        ("max_tokens", -1),
        ("max_tokens", "16"),
        ("max_tokens", True),
        ("temperature", 2.5),
        ("top_p", "high"),
        ("n", 0),
        ("stream", "yes"),
        ("stream_options", {"include_usage": "yes"}),
        ("logprobs", 6),
        ("echo", 1),
        ("stop", ["a", "b", "c", "d", "e"]),
        ("stop", [1]),
        ("presence_penalty", 3),
        ("frequency_penalty", False),
        ("best_of", 21),
        ("logit_bias", {"x": 1}),
        ("logit_bias", {"12": 101}),
        ("logit_bias", []),
        ("user", 5),
        ("seed", 1.5),
    ],
)
def test_wrong_types_name_the_field(field: str, value: Any) -> None:
    body = {"model": "m", "prompt": "x", field: value}
    if field == "stream_options":
        body["stream"] = True
    error = refusal(body)
    assert error["param"] == field
    assert f"'{field}'" in error["message"]


@pytest.mark.parametrize("prompt", [[], [[]], [1, "a"], [-1], [[1], "a"], {"text": "x"}, 5, True])
def test_bad_prompts_are_refused(prompt: Any) -> None:
    assert refusal({"model": "m", "prompt": prompt})["param"] == "prompt"


def test_prompt_and_model_are_required() -> None:
    assert refusal({"model": "m"})["param"] == "prompt"
    assert refusal({"prompt": "x"})["param"] == "model"
    assert refusal({"model": "", "prompt": "x"})["param"] == "model"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"best_of": 1, "n": 2}, "best_of"),
        ({"best_of": 2, "stream": True}, "best_of"),
    ],
)
def test_combinations_openai_refuses(extra: dict[str, Any], param: str) -> None:
    assert refusal({"model": "m", "prompt": "x", **extra})["param"] == param


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1]", b"\xff"])
def test_bodies_that_are_not_json_objects(raw: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        parse_completions_request(raw)
