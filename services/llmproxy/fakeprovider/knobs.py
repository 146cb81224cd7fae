"""Run-time knobs of the fake provider (its faults, and the prompt cache it pretends to have),
and their validated partial update.

Errors: every invalid value raises `ValueError` whose message names the field, so
the HTTP layer can hand it back to the caller unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeGuard, get_args

Outage = Literal["none", "503", "hang", "reset"]
"""How the fake provider misbehaves as a whole, independent of `Knobs.error_rate`."""

OUTAGES: tuple[str, ...] = get_args(Outage)


@dataclass
class Knobs:
    """The knobs; one instance is shared by the app and changed in place by updates."""

    latency_ms: float = 0
    """Delay, in milliseconds, added before the response headers of every API call."""

    chunk_delay_ms: float = 0
    """Delay, in milliseconds, between two chunks of a streamed (SSE) response."""

    error_rate: float = 0.0
    """Share (0 to 1) of API calls answered with `error_status` instead of an answer."""

    error_status: int = 500
    """HTTP status of the errors injected by `error_rate` (400 to 599)."""

    outage: Outage = "none"
    """Whole-service failure: ``503`` answers every API call with 503 and an error body,
    ``hang`` answers nothing until this knob changes or the client gives up, ``reset``
    closes the connection without a response, ``none`` is normal service."""

    seed: int = 0
    """Seed of the random generator that picks which calls `error_rate` fails, so that
    runs are reproducible. A new value restarts the sequence; so does sending the same
    value again through ``PUT /_fake/knobs``."""

    cached_prompt_tokens: int = 0
    """Prompt tokens every chat answer reports as read from a prompt cache (at most the
    prompt's), each API in its own fields: OpenAI's and Azure's
    ``prompt_tokens_details.cached_tokens``, Anthropic's ``cache_read_input_tokens``, Gemini's
    ``cachedContentTokenCount``, Bedrock's ``cacheReadInputTokens``. 0 reports none."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check(field.name, getattr(self, field.name))

    def to_dict(self) -> dict[str, object]:
        """The knobs as a JSON-ready dict, as ``GET /_fake/knobs`` returns them."""
        return dataclasses.asdict(self)


def apply_update(knobs: Knobs, update: Mapping[str, object]) -> None:
    """Validate a partial update (parsed JSON) and apply it to `knobs` in place.

    Every field is checked before any is set, so a rejected update leaves `knobs`
    unchanged. Raises `ValueError` naming the first unknown or invalid field.
    """
    known = {field.name for field in dataclasses.fields(Knobs)}
    for name, value in update.items():
        if name not in known:
            raise ValueError(f"unknown knob {name!r}; known knobs: {', '.join(sorted(known))}")
        _check(name, value)
    for name, value in update.items():
        setattr(knobs, name, value)


def _is_number(value: object) -> TypeGuard[float]:
    # bool is a subclass of int, but `"error_rate": true` is a mistake, not 1.0; and
    # Python's json accepts NaN, which would slip through every range check.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check(name: str, value: object) -> None:
    if name in ("latency_ms", "chunk_delay_ms"):
        if not _is_number(value) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    elif name == "error_rate":
        if not _is_number(value) or not 0 <= value <= 1:
            raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
    elif name == "error_status":
        if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
            raise ValueError(f"{name} must be an integer HTTP status 400-599, got {value!r}")
    elif name == "outage":
        if value not in OUTAGES:
            raise ValueError(f"{name} must be one of {', '.join(OUTAGES)}, got {value!r}")
    elif name == "seed" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    elif name == "cached_prompt_tokens" and (
        isinstance(value, bool) or not isinstance(value, int) or value < 0
    ):
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
