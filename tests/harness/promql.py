"""The metric names a PromQL expression reads, for checking them against what is exported.

Not a PromQL parser: it drops what cannot be a metric name (strings, label matchers, ranges,
grouping clauses, function calls, keywords) and keeps the identifiers left. promtool checks
that the expressions parse; this only has to find the names in expressions that do.
"""

from __future__ import annotations

import re

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
_GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()")
_NUMBER_SUFFIX = re.compile(r"^(?:inf|nan)$", re.IGNORECASE)


def with_grafana_variables(expr: str, interval: str = "5m") -> str:
    """expr with Grafana's $__rate_interval-style variables replaced by a duration."""
    return _GRAFANA_VARIABLE.sub(interval, expr)


def metric_names(expr: str) -> set[str]:
    """The metric (or recording rule) names expr selects."""
    text = with_grafana_variables(expr)
    for pattern in (_STRING, _MATCHERS, _RANGE, _GROUPING):
        text = pattern.sub(" ", text)
    names = set(_IDENTIFIER.findall(text))
    return {n for n in names if n not in _KEYWORDS and not _NUMBER_SUFFIX.match(n)}
