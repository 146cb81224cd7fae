"""Tokens and spend per tenant and model: counted, with the tenant label bounded."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from llmproxy.router.usage_metrics import OTHER_TENANT, UsageMetrics


def _metrics(max_tenants: int) -> tuple[UsageMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    tokens = Counter("t_tokens_total", "", ["tenant", "model", "kind"], registry=registry)
    cost = Counter("t_cost_usd_total", "", ["tenant", "model"], registry=registry)
    return UsageMetrics(max_tenants, tokens, cost), registry


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_tokens_and_cost_are_counted_by_tenant_model_and_kind() -> None:
    metrics, registry = _metrics(10)
    metrics.observe("acme", "gpt-4o-mini", 12, 30, 0.25)
    metrics.observe("acme", "gpt-4o-mini", 3, 5, 0.5)
    metrics.observe("acme", "llama", 1, 1, 0.0)

    prompt = _value(registry, "t_tokens_total", tenant="acme", model="gpt-4o-mini", kind="prompt")
    completion = _value(
        registry, "t_tokens_total", tenant="acme", model="gpt-4o-mini", kind="completion"
    )
    assert (prompt, completion) == (15, 35)
    assert _value(registry, "t_cost_usd_total", tenant="acme", model="gpt-4o-mini") == 0.75
    assert _value(registry, "t_tokens_total", tenant="acme", model="llama", kind="prompt") == 1


def test_tenants_beyond_the_cap_are_counted_as_other() -> None:
    metrics, registry = _metrics(2)
    for tenant in ("a", "b", "c", "d", "a"):
        metrics.observe(tenant, "m", 1, 0, 1.0)

    assert _value(registry, "t_cost_usd_total", tenant="a", model="m") == 2
    assert _value(registry, "t_cost_usd_total", tenant="b", model="m") == 1
    assert _value(registry, "t_cost_usd_total", tenant=OTHER_TENANT, model="m") == 2
    tenants = {
        s.labels["tenant"] for m in registry.collect() for s in m.samples if "tenant" in s.labels
    }
    assert tenants == {"a", "b", OTHER_TENANT}


def test_a_tenant_named_other_does_not_take_a_slot() -> None:
    metrics, _ = _metrics(1)
    assert metrics.tenant_label(OTHER_TENANT) == OTHER_TENANT
    assert metrics.tenant_label("real") == "real"


def test_negative_usage_is_never_subtracted() -> None:
    # Counters cannot go down: a provider reporting nonsense must not crash the router.
    metrics, registry = _metrics(1)
    metrics.observe("a", "m", -5, -1, -0.5)
    assert _value(registry, "t_tokens_total", tenant="a", model="m", kind="prompt") == 0
    assert _value(registry, "t_cost_usd_total", tenant="a", model="m") == 0


def test_a_negative_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="max_tenants must be >= 0"):
        UsageMetrics(-1)


def test_cached_prompt_tokens_are_counted_as_their_own_kind() -> None:
    metrics, registry = _metrics(1)
    metrics.observe("a", "m", 10, 2, 0.1, cached_tokens=6)
    metrics.observe("a", "m", 10, 2, 0.1)
    assert _value(registry, "t_tokens_total", tenant="a", model="m", kind="prompt") == 20
    assert _value(registry, "t_tokens_total", tenant="a", model="m", kind="cached_prompt") == 6
    # A model whose provider caches nothing gets no cached_prompt series at all.
    metrics.observe("a", "plain", 10, 2, 0.1)
    kinds = {
        s.labels["kind"]
        for m in registry.collect()
        for s in m.samples
        if s.labels.get("model") == "plain" and "kind" in s.labels
    }
    assert kinds == {"prompt", "completion"}
