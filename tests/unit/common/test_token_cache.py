"""The cache in front of authz's token answers: fresh, bounded, coalesced, and stale on outage."""

from __future__ import annotations

import asyncio

import pytest

from llmproxy.common.access import Caller, Role
from llmproxy.common.token_check import (
    NEGATIVE_TTL_S,
    AuthzUnavailable,
    Introspection,
    TokenCache,
)

ALICE = Introspection(Caller(actor="token:alice", role=Role.OPERATOR))
UNKNOWN = Introspection(None, "unknown token")


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Answers:
    """A verifier answering from a table, counting questions; `down` makes it unreachable."""

    def __init__(self, table: dict[str, Introspection]) -> None:
        self.table = table
        self.asked: list[str] = []
        self.down = False
        self.gate: asyncio.Event | None = None

    async def introspect(self, token: str) -> Introspection:
        self.asked.append(token)
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise AuthzUnavailable("cannot check the control token: authz answered UNAVAILABLE")
        return self.table.get(token, UNKNOWN)


def cache(answers: Answers, clock: Clock, wall: Clock | None = None, **kwargs: float) -> TokenCache:
    return TokenCache(
        answers,
        ttl_s=kwargs.get("ttl_s", 5.0),
        stale_grace_s=kwargs.get("stale_grace_s", 300.0),
        max_entries=int(kwargs.get("max_entries", 100)),
        clock=clock,
        wall_clock=wall or Clock(0),
    )


async def test_answers_are_reused_while_fresh_then_asked_again() -> None:
    answers, clock = Answers({"a": ALICE}), Clock()
    tokens = cache(answers, clock)
    assert await tokens.introspect("a") == ALICE
    assert await tokens.introspect("a") == ALICE
    assert answers.asked == ["a"]
    clock.now += 5.0
    assert await tokens.introspect("a") == ALICE
    assert answers.asked == ["a", "a"]  # a revocation is seen within ttl_s


async def test_bad_tokens_are_asked_about_at_most_once_a_second() -> None:
    answers, clock = Answers({}), Clock()
    tokens = cache(answers, clock)
    assert await tokens.introspect("x") == UNKNOWN
    assert await tokens.introspect("x") == UNKNOWN
    clock.now += NEGATIVE_TTL_S
    await tokens.introspect("x")
    assert answers.asked == ["x", "x"]


async def test_while_authz_is_down_tokens_seen_valid_work_for_the_stale_grace() -> None:
    answers, clock = Answers({"a": ALICE}), Clock()
    tokens = cache(answers, clock, stale_grace_s=60)
    await tokens.introspect("a")
    await tokens.introspect("x")
    answers.down = True
    clock.now += 30
    assert await tokens.introspect("a") == ALICE
    with pytest.raises(AuthzUnavailable, match="authz answered UNAVAILABLE"):
        await tokens.introspect("x")  # seen invalid: no grace
    with pytest.raises(AuthzUnavailable):
        await tokens.introspect("never-seen")
    clock.now += 40  # past ttl + grace
    with pytest.raises(AuthzUnavailable):
        await tokens.introspect("a")
    answers.down = False
    assert await tokens.introspect("a") == ALICE


async def test_no_answer_outlives_the_tokens_expiry() -> None:
    expiring = Introspection(Caller(actor="token:e", role=Role.VIEWER), expires_at=100.0)
    answers, clock, wall = Answers({"e": expiring}), Clock(), Clock(99.0)
    tokens = cache(answers, clock, wall)
    await tokens.introspect("e")
    wall.now = 100.0
    answers.down = True
    with pytest.raises(AuthzUnavailable):
        await tokens.introspect("e")  # fresh in the cache, but expired: no stale grace either
    answers.down, answers.table = False, {}
    assert await tokens.introspect("e") == UNKNOWN
    assert answers.asked == ["e", "e", "e"]


async def test_concurrent_checks_of_one_token_ask_once() -> None:
    answers, clock = Answers({"a": ALICE}), Clock()
    answers.gate = asyncio.Event()
    tokens = cache(answers, clock)
    waiting = [asyncio.create_task(tokens.introspect("a")) for _ in range(20)]
    await asyncio.sleep(0)
    answers.gate.set()
    assert await asyncio.gather(*waiting) == [ALICE] * 20
    assert answers.asked == ["a"]


async def test_concurrent_checks_share_a_failure_too() -> None:
    answers, clock = Answers({}), Clock()
    answers.gate, answers.down = asyncio.Event(), True
    tokens = cache(answers, clock)
    waiting = [asyncio.create_task(tokens.introspect("a")) for _ in range(3)]
    await asyncio.sleep(0)
    answers.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, AuthzUnavailable) for r in results)
    assert answers.asked == ["a"]


async def test_the_cache_is_bounded_dropping_the_oldest() -> None:
    answers, clock = Answers({f"t{i}": ALICE for i in range(10)}), Clock()
    tokens = cache(answers, clock, max_entries=3)
    for i in range(10):
        await tokens.introspect(f"t{i}")
    await tokens.introspect("t9")
    await tokens.introspect("t0")
    assert answers.asked.count("t9") == 1
    assert answers.asked.count("t0") == 2
