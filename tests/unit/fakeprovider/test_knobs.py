"""Knob validation: bad updates name the field and change nothing."""

from __future__ import annotations

import pytest

from llmproxy.fakeprovider.knobs import Knobs, apply_update


def test_defaults_are_a_healthy_provider() -> None:
    assert Knobs().to_dict() == {
        "latency_ms": 0,
        "chunk_delay_ms": 0,
        "error_rate": 0.0,
        "error_status": 500,
        "outage": "none",
        "seed": 0,
        "cached_prompt_tokens": 0,
    }


def test_partial_update_changes_only_the_given_fields() -> None:
    knobs = Knobs()

    apply_update(knobs, {"latency_ms": 25, "outage": "hang"})

    assert knobs == Knobs(latency_ms=25, outage="hang")


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ({"nope": 1}, "nope"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"latency_ms": "10"}, "latency_ms"),
        ({"chunk_delay_ms": float("nan")}, "chunk_delay_ms"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"error_rate": True}, "error_rate"),
        ({"error_status": 200}, "error_status"),
        ({"error_status": 500.0}, "error_status"),
        ({"outage": "down"}, "outage"),
        ({"seed": 1.5}, "seed"),
        ({"cached_prompt_tokens": -1}, "cached_prompt_tokens"),
        ({"cached_prompt_tokens": 2.0}, "cached_prompt_tokens"),
        ({"cached_prompt_tokens": True}, "cached_prompt_tokens"),
    ],
)
def test_bad_update_names_the_field(update: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        apply_update(Knobs(), update)


def test_rejected_update_leaves_knobs_unchanged() -> None:
    knobs = Knobs(latency_ms=5)

    with pytest.raises(ValueError, match="error_rate"):
        apply_update(knobs, {"latency_ms": 99, "error_rate": 7})

    assert knobs == Knobs(latency_ms=5)


def test_constructor_validates_too() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        Knobs(error_rate=-0.1)
