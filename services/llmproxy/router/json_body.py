"""Reading a request body as JSON: the body as an object, and the checks of its values'
types that every inbound API's validation uses (a bool is not a number, as in JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from llmproxy.common.json_depth import MAX_JSON_DEPTH, too_deep
from llmproxy.router.errors import InvalidRequestError


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
