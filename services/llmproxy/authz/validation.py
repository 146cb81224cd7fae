"""Checks of admin request fields: each failure is an InvalidArgumentError naming the field."""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterable, Mapping

from llmproxy.authz.errors import InvalidArgumentError
from llmproxy.authz.keys import KEY_ID_PATTERN
from llmproxy.common.access import Role
from llmproxy.common.contract import SERVICES, TENANT_PATTERN, TENANT_RULE

# Tenants, users and tiers travel in headers and rate limit descriptors and name Redis keys.
TIER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
LABEL_KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,62}$")
MODEL_PATTERN = re.compile(r"^[!-~]{1,200}$")  # printable ASCII, no spaces
MAX_MODELS = 100
MAX_LABELS = 32
MAX_TEXT = 256
MAX_TOKEN_NAME = 100
MAX_BUDGET_USD = 1e9
MAX_GRACE_S = 30 * 86400
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def key_id(value: str) -> str:
    """A well-formed key id."""
    if not KEY_ID_PATTERN.match(value):
        raise InvalidArgumentError(f"key_id: {value[:40]!r} is not a key id (16 hex digits)")
    return value


def token_id(value: str) -> str:
    """A well-formed control token id."""
    if not KEY_ID_PATTERN.match(value):
        raise InvalidArgumentError(
            f"token_id: {value[:40]!r} is not a control token id (16 hex digits)"
        )
    return value


def token_name(value: str) -> str:
    """Who holds a control token: required, at most MAX_TOKEN_NAME printable characters."""
    if not value.strip():
        raise InvalidArgumentError("name: required: who or what holds the token (a person, a job)")
    if len(value) > MAX_TOKEN_NAME or not value.isprintable():
        raise InvalidArgumentError(f"name: at most {MAX_TOKEN_NAME} printable characters")
    return value


def role(value: int) -> Role:
    """A control token's role: viewer, operator or admin (ROLE_UNSPECIFIED is none of them)."""
    if value not in {r.value for r in Role}:
        names = ", ".join(f"{r.label} (ROLE_{r.name})" for r in Role)
        raise InvalidArgumentError(f"role: required, one of {names}")
    return Role(value)


def service(value: str) -> str:
    """One of the stack's service names."""
    if value not in SERVICES:
        raise InvalidArgumentError(
            f"service: {value[:40]!r} is not a service; one of {', '.join(SERVICES)}"
        )
    return value


def name(field: str, value: str, default: str | None = None) -> str:
    """A tenant or user name; default when empty (required when there is no default)."""
    if not value and default is not None:
        return default
    if not TENANT_PATTERN.match(value):
        raise InvalidArgumentError(f"{field}: {value[:70]!r} must be {TENANT_RULE}")
    return value


def tier(value: str) -> str:
    """A rate-limit tier; `default` when empty."""
    if not value:
        return "default"
    if not TIER_PATTERN.match(value):
        raise InvalidArgumentError(
            f"tier: {value[:40]!r} must be 1-32 letters, digits, '.', '_' or '-'"
        )
    return value


def text(field: str, value: str) -> str:
    """Free text of at most MAX_TEXT printable characters."""
    if len(value) > MAX_TEXT or not value.isprintable():
        raise InvalidArgumentError(f"{field}: at most {MAX_TEXT} printable characters")
    return value


def models(values: Iterable[str]) -> tuple[str, ...]:
    """Allowed model patterns; every model when none are given."""
    patterns = tuple(values)
    if not patterns:
        return ("*",)
    if len(patterns) > MAX_MODELS:
        raise InvalidArgumentError(f"allowed_models: at most {MAX_MODELS} patterns")
    for pattern in patterns:
        if not MODEL_PATTERN.match(pattern):
            raise InvalidArgumentError(
                f"allowed_models: {pattern[:40]!r} must be 1-200 printable characters "
                "without spaces"
            )
    return patterns


def budget(field: str, value: float) -> float:
    """A spend limit in USD: 0 (none) or a positive, finite amount."""
    if not math.isfinite(value) or value < 0 or value > MAX_BUDGET_USD:
        raise InvalidArgumentError(f"{field}: must be between 0 (no limit) and {MAX_BUDGET_USD:g}")
    return value


def labels(values: Mapping[str, str]) -> dict[str, str]:
    """Operator labels: bounded keys and values."""
    if len(values) > MAX_LABELS:
        raise InvalidArgumentError(f"labels: at most {MAX_LABELS} labels")
    for key, value in values.items():
        if not LABEL_KEY_PATTERN.match(key):
            raise InvalidArgumentError(
                f"labels: key {key[:40]!r} must be 1-63 lowercase letters, digits, '.', '_', "
                "'/' or '-'"
            )
        text(f"labels[{key}]", value)
    return dict(values)


def future_time(field: str, value: float | None, now: float) -> float | None:
    """A time that is still to come, or None."""
    if value is not None and value <= now:
        raise InvalidArgumentError(f"{field}: must be in the future")
    return value


def grace_period(value: int) -> int:
    """A rotation grace period in seconds."""
    if not 0 <= value <= MAX_GRACE_S:
        raise InvalidArgumentError(
            f"grace_period_seconds: must be between 0 and {MAX_GRACE_S} (30 days)"
        )
    return value


def page_size(value: int) -> int:
    """A page size: DEFAULT_PAGE_SIZE for 0, at most MAX_PAGE_SIZE."""
    if value < 0:
        raise InvalidArgumentError("page_size: must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(cursor: str | None) -> str:
    """An opaque page token for a cursor; empty for none."""
    return base64.urlsafe_b64encode(cursor.encode()).decode() if cursor else ""


def decode_token(token: str, pattern: re.Pattern[str]) -> str | None:
    """The cursor inside a page token (None for the first page), checked against pattern."""
    if not token:
        return None
    try:
        cursor = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeError, ValueError):
        cursor = ""
    if not pattern.match(cursor):
        raise InvalidArgumentError("page_token: not a token this API returned")
    return cursor
