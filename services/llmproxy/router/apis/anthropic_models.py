"""GET /v1/models in Anthropic's shape, for clients that say they speak Anthropic's API.

The route is shared with OpenAI's models list; the anthropic SDKs (and Claude Code) send the
`anthropic-version` header on every request, which OpenAI's SDKs never do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

VERSION_HEADER = "anthropic-version"
# Served models have no release date here; Anthropic's clients need a valid timestamp.
_CREATED_AT = "1970-01-01T00:00:00Z"


def wants_anthropic(headers: Mapping[str, str]) -> bool:
    """Whether the request came from an Anthropic client."""
    return bool(headers.get(VERSION_HEADER, "").strip())


def model_object(name: str) -> dict[str, Any]:
    """One model as Anthropic's API describes it."""
    return {"type": "model", "id": name, "display_name": name, "created_at": _CREATED_AT}


def model_list(names: Sequence[str]) -> bytes:
    """Every served name as Anthropic's (single) page of models."""
    return json.dumps(
        {
            "data": [model_object(name) for name in names],
            "has_more": False,
            "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None,
        }
    ).encode()
