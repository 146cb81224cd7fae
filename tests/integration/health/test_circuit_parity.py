"""circuit.lua in a real Redis gives the same answers as circuit.py, for random histories."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmproxy.common.redis import connect_redis
from llmproxy.common.settings import RedisSettings
from llmproxy.health import circuit
from llmproxy.health.records import CircuitRecord, Outcome
from llmproxy.health.settings import CircuitSettings
from llmproxy.health.store import RedisHealthStore

SETTINGS = CircuitSettings(
    consecutive_failures=3,
    error_rate=0.5,
    window_s=6,
    buckets=3,
    min_calls=4,
    open_s=2,
    close_after=2,
)
outcomes = st.builds(Outcome, ok=st.booleans(), probe=st.booleans())
steps = st.lists(
    st.tuples(st.floats(min_value=0, max_value=3, allow_nan=False), st.lists(outcomes, max_size=6)),
    max_size=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=steps)
async def test_lua_and_python_agree(
    redis_process: str, redis_client: Any, history: list[Any]
) -> None:
    redis = connect_redis(RedisSettings(url=redis_process))
    store = RedisHealthStore(redis, SETTINGS, "parity")
    await redis.delete(store.key("p", "circuit"))
    record = CircuitRecord()
    now = 1_700_000_000.0
    try:
        for gap, batch in history:
            now += gap
            expected, expected_transitions = circuit.apply(record, batch, SETTINGS, now)
            got, got_transitions = await store.record_outcomes("p", batch, now)
            assert got_transitions == expected_transitions
            assert (got.state, got.consecutive_failures, got.trial_successes, got.reason) == (
                expected.state,
                expected.consecutive_failures,
                expected.trial_successes,
                expected.reason,
            )
            assert got.opened_at == pytest.approx(expected.opened_at)
            assert got.buckets == expected.buckets
            record = expected
    finally:
        await redis.aclose()
