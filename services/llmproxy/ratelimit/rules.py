"""Limits compiled for matching: which limit applies to a descriptor, and its counter's key.

Matching follows envoyproxy/ratelimit: the descriptor's entries walk the tree one level per
entry; at each level an exact key=value wins over a prefix value, which wins over the key
alone. The limit is the one of the node the last entry reaches; a descriptor that runs past
the tree or misses a level has no limit. Each distinct descriptor (values included) gets its own
counter.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from urllib.parse import quote

from llmproxy.common.limits_file import UNIT_MS, DescriptorSpec, LimitsFile
from llmproxy.common.ratelimit_descriptors import TOKENS_KEY
from llmproxy.ratelimit.errors import DescriptorError

Entries = tuple[tuple[str, str], ...]
LOG = "l"
COUNTER = "c"
_MAX_KEY_CHARS = 300
_MAX_CACHED = 200_000


@dataclass(frozen=True, slots=True)
class Rule:
    """One configured limit (or an explicit `unlimited`)."""

    entries: Entries  # as configured: value "" means any value, "x*" a prefix
    requests_per_unit: int
    unit: str
    algorithm: str  # LOG or COUNTER
    shadow_mode: bool
    unlimited: bool
    name: str

    @property
    def window_ms(self) -> int:
        """The sliding window's length."""
        return UNIT_MS[self.unit]

    @property
    def tokens(self) -> bool:
        """Whether its hits are tokens (a descriptor under the `tokens` key) not requests."""
        return self.entries[0][0] == TOKENS_KEY


@dataclass(frozen=True, slots=True)
class Match:
    """A descriptor's limit and the key of its counter in the store."""

    rule: Rule
    key: str
    entries: Entries  # the descriptor's own (values as sent)


@dataclass
class _Node:
    rule: Rule | None = None
    index: int = -1  # of rule in Limits.rules
    exact: dict[tuple[str, str], _Node] = field(default_factory=dict)
    prefixes: list[tuple[str, str, _Node]] = field(default_factory=list)
    any_value: dict[str, _Node] = field(default_factory=dict)

    def child(self, key: str, value: str) -> _Node | None:
        found = self.exact.get((key, value))
        if found is not None:
            return found
        for prefix_key, prefix, node in self.prefixes:
            if prefix_key == key and value.startswith(prefix):
                return node
        return self.any_value.get(key)


def _rule_of(spec: DescriptorSpec, path: Entries) -> Rule | None:
    if spec.unlimited:
        return Rule(path, 0, "second", COUNTER, spec.shadow_mode, True, "")
    if spec.rate_limit is None:
        return None
    limit = spec.rate_limit
    algorithm = LOG if limit.algorithm == "sliding_log" else COUNTER
    return Rule(
        path,
        limit.requests_per_unit,
        limit.unit,
        algorithm,
        spec.shadow_mode,
        False,
        limit.name,
    )


_PLAIN = re.compile(r"[A-Za-z0-9_.:/@-]*\Z")


def _encode(value: str) -> str:
    # Braces would move Redis Cluster's hash tag; separators would make two descriptors collide.
    return value if _PLAIN.match(value) else quote(value, safe="-_.:/@")


def counter_key(domain: str, entries: Entries, rule: Rule) -> str:
    """The store key of a descriptor's counter; the hash tag keeps each counter in one slot.

    The unit and algorithm are part of the key, so a reload that changes either starts a
    fresh counter instead of misreading the old one.
    """
    path = "|".join(f"{_encode(k)}={_encode(v)}" for k, v in entries)
    if len(path) > _MAX_KEY_CHARS:
        path = "sha256:" + hashlib.sha256(path.encode()).hexdigest()
    return f"llmproxy:rl:{{{_encode(domain)}|{path}}}:{rule.unit}:{rule.algorithm}"


class Limits:
    """The compiled limits of one file: resolves descriptors to limits, with a cache."""

    def __init__(self, spec: LimitsFile) -> None:
        self.domain = spec.domain
        self.rules: list[Rule] = []
        self._root = _Node()
        self._build(self._root, spec.descriptors, ())
        # Plain tuples of str and int, which the garbage collector stops tracking: with one
        # entry per distinct descriptor (hundreds of thousands), objects here made every full
        # collection long enough to stall the service past Envoy's timeout.
        self._cache: dict[Entries, tuple[int, str] | None] = {}

    def _build(self, node: _Node, children: list[DescriptorSpec], path: Entries) -> None:
        for spec in children:
            value = spec.value or ""
            child = _Node()
            child_path = (*path, (spec.key, value))
            child.rule = _rule_of(spec, child_path)
            if child.rule is not None:
                child.index = len(self.rules)
                self.rules.append(child.rule)
            if not value:
                node.any_value[spec.key] = child
            elif value.endswith("*"):
                node.prefixes.append((spec.key, value[:-1], child))
            else:
                node.exact[(spec.key, value)] = child
            self._build(child, spec.descriptors, child_path)

    def match(self, entries: Entries) -> Match | None:
        """The limit that applies to a descriptor's entries, or None when none does."""
        found = self.locate(entries)
        return None if found is None else Match(self.rules[found[0]], found[1], entries)

    def locate(self, entries: Entries) -> tuple[int, str] | None:
        """match() as plain values: the limit's index in rules and the counter's key."""
        try:
            return self._cache[entries]
        except KeyError:
            pass
        if not entries:
            raise DescriptorError("a descriptor needs at least one entry")
        if not all(key for key, _ in entries):
            raise DescriptorError("every descriptor entry needs a key")
        node: _Node | None = self._root
        for key, value in entries:
            node = node.child(key, value) if node is not None else None
            if node is None:
                break
        found = None
        if node is not None and node.rule is not None:
            found = (node.index, counter_key(self.domain, entries, node.rule))
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()  # distinct descriptors are unbounded; the tree is the truth
        self._cache[entries] = found
        return found
