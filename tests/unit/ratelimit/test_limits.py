"""The limits file: what validates, and the message a bad one gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmproxy.common.limits_file import (
    LimitsConfigError,
    failure_mode_of,
    load_limits,
    parse_limits,
)
from llmproxy.ratelimit.errors import DescriptorError
from llmproxy.ratelimit.rules import COUNTER, LOG, Limits, counter_key
from llmproxy.ratelimit.settings import DEFAULT_LIMITS_FILE

GOOD = """
domain: llmproxy
descriptors:
  - key: tenant
    rate_limit: {unit: MINUTE, requests_per_unit: 100}
    descriptors:
      - key: key_id
        rate_limit: {unit: second, requests_per_unit: 5, algorithm: sliding_log, name: k}
        descriptors:
          - key: model
            value: gpt-4o
            rate_limit: {unit: hour, requests_per_unit: 7}
      - key: key_id
        value: vip
        unlimited: true
      - key: key_id
        value: "batch-*"
        rate_limit: {unit: day, requests_per_unit: 9}
"""


def limits(text: str = GOOD) -> Limits:
    return Limits(parse_limits(text, "test.yaml", "llmproxy"))


def test_the_shipped_limits_file_is_valid() -> None:
    loaded = load_limits(DEFAULT_LIMITS_FILE, "llmproxy")
    assert loaded.spec.descriptors
    assert len(loaded.sha256) == 64


D = "domain: llmproxy\ndescriptors: "
R = "rate_limit: {unit: second, requests_per_unit: 1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            D + "[{key: a, rate_limit: {unit: week, requests_per_unit: 1}}]",
            "descriptors[0].rate_limit.unit: Input should be 'second', 'minute', 'hour' or 'day'",
        ),
        (
            D + "[{key: a, rate_limit: {unit: second, requests_per_unit: -1}}]",
            "descriptors[0].rate_limit.requests_per_unit: Input should be greater than or equal",
        ),
        (
            D + "[{key: a, rate_limit: {unit: second}}]",
            "descriptors[0].rate_limit.requests_per_unit: Field required",
        ),
        (D + "[{key: a, unlimited: true, " + R + "}}]", "unlimited and rate_limit cannot both"),
        (D + "[{key: a}, {key: a}]", "duplicate descriptor 'a' at the same level"),
        (
            D + "[{key: a, descriptors: [{key: b, value: x}, {key: b, value: x}]}]",
            "duplicate descriptor 'b=x' at the same level",
        ),
        (D + "[{key: ''}]", "descriptors[0].key: String should have at least 1 character"),
        (
            D + "[{key: a, replaces: [b]}]",
            "descriptors[0].replaces: Extra inputs are not permitted",
        ),
        ("domain: other\n", "domain 'other' is not this service's domain 'llmproxy'"),
        ("descriptors: []\n", "domain: Field required"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("domain: [unclosed\n", "not valid YAML"),
        (
            D + "[{key: a, " + R + ", algorithm: leaky}}]",
            "rate_limit.algorithm: Input should be 'sliding_counter' or 'sliding_log'",
        ),
        (
            D + "[{key: a, " + R + "}, failure_mode: shut}]",
            "descriptors[0].failure_mode: Input should be 'closed' or 'open'",
        ),
        (
            D + "[{key: a, " + R + "}, failure_mode: true}]",
            "descriptors[0].failure_mode: Input should be 'closed' or 'open'",
        ),
        (
            D + "[{key: a, failure_mode: open, descriptors: [{key: b, " + R + "}}]}]",
            "descriptors[0]: Value error, failure_mode applies to a rate_limit, and this "
            "descriptor has none",
        ),
        (
            D + "[{key: a, unlimited: true, failure_mode: closed}]",
            "failure_mode applies to a rate_limit",
        ),
    ],
)
def test_a_bad_file_is_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(LimitsConfigError) as raised:
        parse_limits(text, "test.yaml", "llmproxy")
    assert message in str(raised.value)
    assert str(raised.value).startswith("test.yaml:")


def test_failure_modes_default_to_closed_except_for_the_route_safety_net() -> None:
    spec = parse_limits(
        D
        + "[{key: route, value: openai, "
        + R
        + "}}, {key: tenant, "
        + R
        + "}, descriptors: [{key: route, "
        + R
        + "}}]}, {key: model, "
        + R
        + "}, failure_mode: open}, {key: route, value: admin, "
        + R
        + "}, failure_mode: closed}]",
        "t",
        "llmproxy",
    )
    route, tenant, model, admin = spec.descriptors
    assert failure_mode_of(route, 0) == "open"
    assert failure_mode_of(tenant, 0) == "closed"
    assert failure_mode_of(tenant.descriptors[0], 1) == "closed"  # a nested `route` key
    assert failure_mode_of(model, 0) == "open"
    assert failure_mode_of(admin, 0) == "closed"


def test_too_deep_a_tree_is_refused() -> None:
    nested = "{key: k}"
    for _ in range(9):
        nested = f"{{key: k, descriptors: [{nested}]}}"
    with pytest.raises(LimitsConfigError, match="nest 10 levels deep; at most 8"):
        parse_limits(f"domain: llmproxy\ndescriptors: [{nested}]", "t", "llmproxy")


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LimitsConfigError, match="cannot read limits file"):
        load_limits(tmp_path / "missing.yaml", "llmproxy")


def test_matching_follows_envoyproxy_ratelimit() -> None:
    compiled = limits()
    tenant = compiled.match((("tenant", "acme"),))
    assert tenant is not None
    assert (tenant.rule.requests_per_unit, tenant.rule.unit, tenant.rule.algorithm) == (
        100,
        "minute",
        COUNTER,
    )
    key = compiled.match((("tenant", "acme"), ("key_id", "k1")))
    assert key is not None
    assert (key.rule.requests_per_unit, key.rule.algorithm, key.rule.name) == (5, LOG, "k")
    # An exact value wins over the key alone, at any depth.
    vip = compiled.match((("tenant", "acme"), ("key_id", "vip")))
    assert vip is not None
    assert vip.rule.unlimited
    model = compiled.match((("tenant", "acme"), ("key_id", "k1"), ("model", "gpt-4o")))
    assert model is not None
    assert model.rule.requests_per_unit == 7
    # A prefix value.
    batch = compiled.match((("tenant", "acme"), ("key_id", "batch-7")))
    assert batch is not None
    assert batch.rule.unit == "day"
    # No node for the model: no limit; past the tree: no limit; unknown key: no limit.
    assert compiled.match((("tenant", "acme"), ("key_id", "k1"), ("model", "other"))) is None
    assert (
        compiled.match((("tenant", "a"), ("key_id", "k"), ("model", "gpt-4o"), ("x", "y"))) is None
    )
    assert compiled.match((("user", "u"),)) is None


def test_each_descriptor_value_gets_its_own_counter_in_one_cluster_slot() -> None:
    compiled = limits()
    one = compiled.match((("tenant", "a"), ("key_id", "k1")))
    two = compiled.match((("tenant", "a"), ("key_id", "k2")))
    assert one is not None
    assert two is not None
    assert one.rule is two.rule
    assert one.key != two.key
    assert one.key == "llmproxy:rl:{llmproxy|tenant=a|key_id=k1}:second:l"
    # Braces in a value cannot move the hash tag.
    assert counter_key("d", (("k", "{x}"),), one.rule).count("{") == 1
    long = counter_key("d", (("k", "v" * 1000),), one.rule)
    assert len(long) < 200


def test_malformed_descriptors_are_refused() -> None:
    compiled = limits()
    with pytest.raises(DescriptorError, match="at least one entry"):
        compiled.match(())
    with pytest.raises(DescriptorError, match="needs a key"):
        compiled.match((("", "x"),))
