"""What a correct probe answer looks like, per provider kind and probe mode: pure checks.

A probe passes on a 200 whose JSON has the shape the provider's API documents; a 429 means the
provider is up but throttled (it passes, and makes the provider DEGRADED); anything else fails
with a detail saying what was wrong. One exception: Bedrock's token-free probe passes on
AccessDeniedException too, which AWS answers only once the signature and credentials are
valid (they may lack the permission to list async invocations, which calls do not need).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_DETAIL = 200


@dataclass(frozen=True)
class Verdict:
    """Whether an answer shows a working provider, and what was found."""

    ok: bool
    detail: str
    rate_limited: bool = False


def _snippet(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip().replace("\n", " ")
    return text[:MAX_DETAIL] + ("..." if len(text) > MAX_DETAIL else "")


def _models_shape(data: Any) -> str | None:
    """OpenAI's and Anthropic's model lists: {"data": [{"id": "...", ...}, ...]}."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return "no `data` list in the model list"
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            return f"model list entry {index} has no string `id`"
    return None


def _gemini_models_shape(data: Any) -> str | None:
    """Gemini's model list: {"models": [{"name": "models/...", ...}, ...]}."""
    items = data.get("models") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return "no `models` list in the model list"
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return f"model list entry {index} has no string `name`"
    return None


def _gemini_completion_shape(data: Any) -> str | None:
    # A one-token answer may stop before any text (MAX_TOKENS): a candidate is what counts.
    candidates = data.get("candidates") if isinstance(data, dict) else None
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
        return "no `candidates` in the answer"
    return None


def _openai_completion_shape(data: Any) -> str | None:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        return "no `choices` in the completion"
    first = choices[0]
    if not isinstance(first, dict) or not isinstance(first.get("message"), dict):
        return "the first choice has no `message`"
    return None


def _anthropic_completion_shape(data: Any) -> str | None:
    if not isinstance(data, dict) or data.get("type") != "message":
        return "not a `message` object"
    if not isinstance(data.get("content"), list):
        return "no `content` list in the message"
    return None


def _bedrock_list_shape(data: Any) -> str | None:
    items = data.get("asyncInvokeSummaries") if isinstance(data, dict) else None
    return None if isinstance(items, list) else "no `asyncInvokeSummaries` list"


def _bedrock_completion_shape(data: Any) -> str | None:
    output = data.get("output") if isinstance(data, dict) else None
    if not isinstance(output, dict) or not isinstance(output.get("message"), dict):
        return "no `output.message` in the Converse answer"
    return None


def _bedrock_verdict(mode: str, data: Any) -> Verdict:
    if mode == "models":
        problem = _bedrock_list_shape(data)
        return Verdict(problem is None, problem or "signed listing answered")
    problem = _bedrock_completion_shape(data)
    return Verdict(problem is None, problem or "one-token completion answered")


def _refusal(kind: str, mode: str, status: int, body: bytes, error_type: str) -> Verdict:
    if status == 429 or error_type == "ThrottlingException":
        return Verdict(True, f"rate limited ({status})", rate_limited=True)
    if kind == "bedrock" and mode == "models" and error_type == "AccessDeniedException":
        return Verdict(True, "signature accepted (listing not permitted)")
    return Verdict(False, f"HTTP {status}: {_snippet(body)}")


def check_answer(kind: str, mode: str, status: int, body: bytes, error_type: str = "") -> Verdict:
    """Judge one probe answer of a provider of kind (ProviderSettings.kind) in mode; error_type
    is Bedrock's `x-amzn-errortype`."""
    if status != 200:
        return _refusal(kind, mode, status, body, error_type)
    try:
        data = json.loads(body)
    except ValueError:
        return Verdict(False, f"not JSON: {_snippet(body)}")
    if kind == "bedrock":
        return _bedrock_verdict(mode, data)
    if mode == "models":
        gemini = kind == "gemini"
        problem = _gemini_models_shape(data) if gemini else _models_shape(data)
        if problem is None:
            return Verdict(True, f"{len(data['models' if gemini else 'data'])} models listed")
    elif kind == "gemini":
        problem = _gemini_completion_shape(data)
    elif kind == "anthropic":
        problem = _anthropic_completion_shape(data)
    else:
        problem = _openai_completion_shape(data)
    if problem is not None:
        return Verdict(False, problem)
    return Verdict(True, "one-token completion answered")
