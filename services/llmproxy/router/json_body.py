"""Reading a request body as JSON: the body as an object, and the checks of its fields and
values that every inbound API's validation uses (a bool is not a number, as in JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from llmproxy.common.json_depth import MAX_JSON_DEPTH, too_deep
from llmproxy.router.errors import InvalidRequestError

FieldChecks = dict[str, tuple[Callable[[Any], bool], str]]
"""Optional fields, each with its check and what the check expects (for the error)."""


def load_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or an InvalidRequestError saying why not."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: malformed JSON, or an integer too long to convert; RecursionError:
        # nesting too deep for the parser.
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    if too_deep(body):
        raise InvalidRequestError(
            f"The request body nests more than {MAX_JSON_DEPTH} levels of arrays and objects."
        )
    return body


def check_model(body: dict[str, Any]) -> str:
    """The request's `model`, or the 400 saying it must be a non-empty string."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(
            "'model' is required and must be a non-empty string.", param="model"
        )
    return model


def check_types(body: dict[str, Any], checks: FieldChecks) -> None:
    """A 400 naming the first field of checks that is set (not null) and fails its check."""
    for name, (valid, expected) in checks.items():
        if body.get(name) is not None and not valid(body[name]):
            raise InvalidRequestError(f"'{name}' must be {expected}.", param=name)


def is_number(value: Any) -> bool:
    """A JSON number: an int or a float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    """A JSON integer, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_positive_int(value: Any) -> bool:
    """A JSON integer above zero."""
    return is_int(value) and value > 0


def int_in(low: int, high: int) -> Callable[[Any], bool]:
    """The check for an integer from low to high."""
    return lambda v: is_int(v) and low <= v <= high


def number_in(low: float, high: float) -> Callable[[Any], bool]:
    """The check for a number from low to high."""
    return lambda v: is_number(v) and low <= v <= high
