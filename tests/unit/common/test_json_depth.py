"""The nesting limit of request JSON, checked without recursion."""

from __future__ import annotations

import json

from llmproxy.common.json_depth import MAX_JSON_DEPTH, too_deep


def nested(depth: int) -> object:
    return json.loads("[" * depth + "]" * depth)


def test_depth_counts_arrays_and_objects() -> None:
    assert not too_deep({"a": [{"b": []}]}, limit=4)
    assert too_deep({"a": [{"b": []}]}, limit=3)
    assert not too_deep("text", limit=1)
    assert not too_deep({"messages": [{"content": "x"}] * 1000}, limit=3)


def test_the_limit_is_exact_and_deep_values_need_no_recursion() -> None:
    assert not too_deep(nested(MAX_JSON_DEPTH))
    assert too_deep(nested(MAX_JSON_DEPTH + 1))
    assert too_deep(nested(800))  # walking it must not recurse, as parsing it nearly did
