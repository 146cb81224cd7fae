"""How deeply a request's JSON may nest, checked without recursion.

Every side that reads a client's JSON body (authz for its token estimate, the router for
validation, cache keys and translation) walks it recursively somewhere, and Python's recursion
limit is about a thousand frames: a body nested that deep must be refused before any of them
walks it, with a 400 rather than a crash. No API a client speaks needs more than a few dozen
levels, tool schemas included.
"""

from __future__ import annotations

from typing import Any

MAX_JSON_DEPTH = 100


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether value (parsed JSON) nests arrays and objects more than limit levels deep."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                pending.append((child, depth + 1))
    return False
