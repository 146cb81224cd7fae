"""Prices per model and target, the cached input discount, and usage read with cached tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from llmproxy.common.errors import ConfigError
from llmproxy.config import load_config
from llmproxy.router import accounting
from llmproxy.router.pricing import Prices, Tokens
from llmproxy.router.providers import sse
from llmproxy.router.settings import ModelSettings


def _model(*targets: dict[str, Any], **prices: Any) -> ModelSettings:
    return ModelSettings.model_validate({"name": "m", "targets": list(targets), **prices})


def test_a_target_without_prices_costs_the_models() -> None:
    model = _model({"provider": "a", "model": "x"}, input_usd_per_mtok=2, output_usd_per_mtok=8)
    assert model.prices("a") == Prices(2, 8, 2)  # no cached price: no discount
    assert model.prices("a").cost_usd(Tokens(1_000_000, 0, 500_000)) == pytest.approx(6.0)


def test_each_target_may_override_each_price() -> None:
    model = _model(
        {"provider": "a", "model": "x"},
        {"provider": "b", "model": "y", "input_usd_per_mtok": 1, "cached_input_usd_per_mtok": 0.1},
        {"provider": "c", "model": "z", "output_usd_per_mtok": 3},
        input_usd_per_mtok=2,
        output_usd_per_mtok=8,
        cached_input_usd_per_mtok=0.5,
    )
    assert model.prices("a") == Prices(2, 8, 0.5)
    assert model.prices("b") == Prices(1, 8, 0.1)
    assert model.prices("c") == Prices(2, 3, 0.5)


def test_a_target_overriding_only_its_input_price_has_no_discount_by_default() -> None:
    model = _model({"provider": "a", "model": "x", "input_usd_per_mtok": 1}, input_usd_per_mtok=2)
    assert model.prices("a") == Prices(1, 0, 1)


def test_a_provider_that_is_no_target_pays_the_models_prices() -> None:
    # Demo mode answers every model from the fake provider, which no model names as a target.
    model = _model(
        {"provider": "a", "model": "x", "input_usd_per_mtok": 1},
        input_usd_per_mtok=2,
        output_usd_per_mtok=4,
        cached_input_usd_per_mtok=0.5,
    )
    assert model.prices("demo") == model.prices(None) == Prices(2, 4, 0.5)


def test_cached_prompt_tokens_are_priced_at_the_cached_price() -> None:
    prices = Prices(input_usd_per_mtok=2, output_usd_per_mtok=8, cached_input_usd_per_mtok=0.5)
    # 600k uncached at 2, 400k cached at 0.5, 100k completion at 8.
    assert prices.cost_usd(Tokens(1_000_000, 400_000, 100_000)) == pytest.approx(1.2 + 0.2 + 0.8)
    # A cached count beyond the prompt (a confused provider) is never a negative prompt.
    assert prices.cost_usd(Tokens(10, 50, 0)) == pytest.approx(10 * 0.5 / 1e6)
    assert prices.cost_usd(Tokens(10, -5, 0)) == pytest.approx(10 * 2 / 1e6)


@pytest.mark.parametrize(
    ("targets", "prices", "expected"),
    [
        (
            [{"provider": "a", "model": "x", "input_usd_per_mtok": -1}],
            {},
            "targets.0.input_usd_per_mtok",
        ),
        (
            [{"provider": "a", "model": "x", "cached_input_usd_per_mtok": float("nan")}],
            {},
            "targets.0.cached_input_usd_per_mtok",
        ),
        ([{"provider": "a", "model": "x"}], {"output_usd_per_mtok": float("inf")}, "output_usd"),
        (
            [{"provider": "a", "model": "x"}],
            {"input_usd_per_mtok": 1, "cached_input_usd_per_mtok": 2},
            "cached_input_usd_per_mtok: 2.0 is above input_usd_per_mtok 1.0",
        ),
        (
            [
                {"provider": "a", "model": "x"},
                {"provider": "b", "model": "y", "input_usd_per_mtok": 0.1},
            ],
            {"input_usd_per_mtok": 1, "cached_input_usd_per_mtok": 0.5},
            "targets[1].cached_input_usd_per_mtok: 0.5 is above the target's input price 0.1",
        ),
        (
            [
                {"provider": "a", "model": "x"},
                {"provider": "a", "model": "y", "output_usd_per_mtok": 9},
            ],
            {},
            "targets[1]: provider 'a' is also targets[0] of model 'm', at other prices",
        ),
        (
            [{"provider": "a", "model": "x", "cached_usd_per_mtok": 1}],
            {},
            "targets.0.cached_usd_per_mtok",
        ),
    ],
)
def test_bad_prices_are_refused_naming_the_field(
    targets: list[dict[str, Any]], prices: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ValidationError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        _model(*targets, **prices)


def test_targets_of_one_provider_at_the_same_prices_are_fine() -> None:
    model = _model(
        {"provider": "a", "model": "x"},
        {"provider": "a", "model": "y", "input_usd_per_mtok": 1},
        input_usd_per_mtok=1,
    )
    assert model.prices("a") == Prices(1, 0, 1)


def test_a_bad_price_in_the_file_stops_startup_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    model = {
        "name": "m",
        "targets": [{"provider": "p", "model": "x", "cached_input_usd_per_mtok": "cheap"}],
    }
    providers = [{"name": "p", "base_url": "http://p"}]
    path.write_text(yaml.safe_dump({"providers": providers, "models": [model]}))
    with pytest.raises(ConfigError, match=r"models\.0\.targets\.0\.cached_input_usd_per_mtok"):
        load_config(path, environ={})


def test_an_existing_config_without_target_prices_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    model = {
        "name": "m",
        "targets": [{"provider": "p", "model": "x"}],
        "input_usd_per_mtok": 0.15,
        "output_usd_per_mtok": 0.6,
    }
    path.write_text(
        yaml.safe_dump({"providers": [{"name": "p", "base_url": "http://p"}], "models": [model]})
    )
    config = load_config(path, environ={})
    assert config.models[0].prices("p") == Prices(0.15, 0.6, 0.15)
    # Demo mode copies the model onto the fake provider: its prices stay the model's.
    (served,) = config.served_models({})
    assert served.prices(served.targets[0].provider) == Prices(0.15, 0.6, 0.15)


def _usage(**usage: Any) -> bytes:
    return json.dumps({"choices": [], "usage": usage}).encode()


def test_usage_reads_cached_tokens_where_openai_reports_them() -> None:
    body = _usage(
        prompt_tokens=100, completion_tokens=7, prompt_tokens_details={"cached_tokens": 64}
    )
    assert accounting.answer_usage(body) == Tokens(100, 64, 7)
    assert accounting.answer_usage(_usage(prompt_tokens=5, completion_tokens=1)) == Tokens(5, 0, 1)
    # OpenAI sends null details at times; a count beyond the prompt is capped.
    nulled = _usage(prompt_tokens=5, completion_tokens=1, prompt_tokens_details=None)
    assert accounting.answer_usage(nulled) == Tokens(5, 0, 1)
    over = _usage(prompt_tokens=5, completion_tokens=1, prompt_tokens_details={"cached_tokens": 9})
    assert accounting.answer_usage(over) == Tokens(5, 5, 1)


def test_stream_usage_reads_cached_tokens_of_the_usage_chunk() -> None:
    events = [
        sse.encode({"choices": [{"index": 0, "delta": {"content": "a"}}], "usage": None}),
        sse.encode(
            {
                "choices": [],
                "usage": {
                    "prompt_tokens": 40,
                    "completion_tokens": 2,
                    "prompt_tokens_details": {"cached_tokens": 32},
                },
            }
        ),
        sse.DONE,
    ]
    assert accounting.stream_usage(events) == Tokens(40, 32, 2)
