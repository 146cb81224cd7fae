"""The limits file: envoyproxy/ratelimit's configuration format, validated.

Two sides read it: the rate limit service (its limits) and Envoy's config generator (whether a
check that cannot finish refuses the request, from each limit's failure_mode).

    domain: llmproxy
    descriptors:
      - key: tenant                     # any tenant: each gets its own counter
        rate_limit: {unit: minute, requests_per_unit: 600}
        descriptors:
          - key: key_id
            rate_limit: {unit: minute, requests_per_unit: 60, algorithm: sliding_log}
      - key: tenant
        value: internal                 # an exact value wins over the key alone
        unlimited: true
      - key: remote_address
        rate_limit: {unit: second, requests_per_unit: 20}
        shadow_mode: true               # measured and reported, never enforced
      - key: route
        value: openai                   # every request: a safety net far above normal traffic
        rate_limit: {unit: second, requests_per_unit: 20000}
        failure_mode: open              # a check that cannot finish lets the request through

Beyond envoyproxy/ratelimit's fields, a rate_limit may name its `algorithm`: `sliding_counter`
(the default: two fixed-window counters weighted by overlap, O(1) memory, approximate) or
`sliding_log` (every hit kept in the window, exact, memory grows with hits per window).
A value ending in `*` matches values by prefix, as in envoyproxy/ratelimit.

Beyond it too, a limit may name its `failure_mode`: what happens to a request whose check cannot
finish (the rate limit service is down, overloaded or too slow for Envoy's timeout). `closed`
refuses it (503 with retry-after), `open` lets it through unchecked. The default is closed,
except for the global safety net (the `route` descriptor every request sends), which is open.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from llmproxy.common.errors import ConfigError
from llmproxy.common.ratelimit_descriptors import ROUTE_KEY
from llmproxy.common.settings import StrictModel

Unit = Literal["second", "minute", "hour", "day"]
Algorithm = Literal["sliding_counter", "sliding_log"]
FailureMode = Literal["closed", "open"]
UNIT_MS: dict[str, int] = {
    "second": 1_000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
}
MAX_REQUESTS_PER_UNIT = 2**32 - 1  # Envoy's RateLimit.requests_per_unit is a uint32
MAX_DEPTH = 8


class LimitsConfigError(ConfigError):
    """The limits file cannot be used; the limits in force (if any) stay."""


class RateLimitSpec(StrictModel):
    """How many hits a descriptor allows per unit, and how they are counted."""

    requests_per_unit: int = Field(
        ge=0,
        le=MAX_REQUESTS_PER_UNIT,
        description="Hits allowed per unit: requests, or tokens for token descriptors. "
        "0 refuses every request.",
    )
    unit: Unit = Field(description="second, minute, hour or day: the sliding window's length.")
    algorithm: Algorithm = Field(
        "sliding_counter", description="sliding_counter (approximate) or sliding_log (exact)."
    )
    name: str = Field("", max_length=200, description="Optional name reported with the limit.")

    @field_validator("unit", "algorithm", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        # envoyproxy/ratelimit's files spell units either way (minute, MINUTE).
        return value.lower() if isinstance(value, str) else value


class DescriptorSpec(StrictModel):
    """One level of the descriptor tree: a key, optionally a value, and what it allows."""

    key: str = Field(min_length=1, max_length=200, description="The entry key to match.")
    value: str | None = Field(
        None,
        max_length=1000,
        description="The entry value to match; absent matches every value (each its own "
        "counter); a trailing * matches by prefix.",
    )
    rate_limit: RateLimitSpec | None = Field(None, description="The limit at this level.")
    unlimited: bool = Field(False, description="Explicitly no limit at this level.")
    shadow_mode: bool = Field(False, description="Count and report, but never refuse.")
    failure_mode: FailureMode | None = Field(
        None,
        description="When its check cannot finish: closed refuses the request, open lets it "
        "through. Default: open for the global safety net (a top-level route descriptor), "
        "closed for every other limit.",
    )
    descriptors: list[DescriptorSpec] = Field(
        default_factory=list, description="Nested levels, matched by the next entries."
    )

    @model_validator(mode="after")
    def _check(self) -> DescriptorSpec:
        if self.unlimited and self.rate_limit is not None:
            raise ValueError("unlimited and rate_limit cannot both be set")
        if self.value is not None and self.value == "":
            raise ValueError("value must not be empty (leave it out to match every value)")
        if self.failure_mode is not None and self.rate_limit is None:
            raise ValueError("failure_mode applies to a rate_limit, and this descriptor has none")
        _check_siblings(self.descriptors)
        return self


def _label(spec: DescriptorSpec) -> str:
    return spec.key if spec.value is None else f"{spec.key}={spec.value}"


def _check_siblings(children: list[DescriptorSpec]) -> None:
    seen: set[tuple[str, str | None]] = set()
    for child in children:
        ident = (child.key, child.value)
        if ident in seen:
            raise ValueError(f"duplicate descriptor {_label(child)!r} at the same level")
        seen.add(ident)


class LimitsFile(StrictModel):
    """The whole limits file."""

    domain: str = Field(min_length=1, description="The domain Envoy sends descriptors under.")
    descriptors: list[DescriptorSpec] = Field(
        default_factory=list, description="The top level of the descriptor tree."
    )

    @model_validator(mode="after")
    def _check(self) -> LimitsFile:
        _check_siblings(self.descriptors)
        depth = _depth(self.descriptors)
        if depth > MAX_DEPTH:
            raise ValueError(f"descriptors nest {depth} levels deep; at most {MAX_DEPTH}")
        return self


def _depth(children: list[DescriptorSpec]) -> int:
    return max((1 + _depth(c.descriptors) for c in children), default=0)


def failure_mode_of(spec: DescriptorSpec, depth: int) -> FailureMode:
    """The failure mode of the limit spec sets at depth (0: top level), its default if unset."""
    if spec.failure_mode is not None:
        return spec.failure_mode
    return "open" if depth == 0 and spec.key == ROUTE_KEY else "closed"


@dataclass(frozen=True)
class LoadedLimits:
    """A validated limits file and where it came from."""

    spec: LimitsFile
    path: Path
    sha256: str


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ""
        for part in item["loc"]:
            where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
        lines.append(f"  {where or '(top level)'}: {item['msg']}")
    return "\n".join(lines)


def parse_limits(text: str | bytes, source: str, domain: str) -> LimitsFile:
    """Validate a limits document for domain, or raise LimitsConfigError naming each problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LimitsConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise LimitsConfigError(f"{source}: the top level must be a mapping with a domain")
    try:
        spec = LimitsFile.model_validate(data)
    except ValidationError as exc:
        raise LimitsConfigError(f"{source}: invalid limits:\n{_describe(exc)}") from exc
    if spec.domain != domain:
        raise LimitsConfigError(
            f"{source}: domain {spec.domain!r} is not this service's domain {domain!r}"
        )
    return spec


def load_limits(path: Path, domain: str) -> LoadedLimits:
    """Read and validate the limits file, or raise LimitsConfigError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LimitsConfigError(f"cannot read limits file {path}: {exc.strerror}") from exc
    spec = parse_limits(raw, str(path), domain)
    return LoadedLimits(spec, path, hashlib.sha256(raw).hexdigest())
