"""The decision: key, revocation, expiry, model access, budget; with fakes and a fake clock."""

from __future__ import annotations

import dataclasses

import pytest

from llmproxy.authz.authorizer import Authorizer
from llmproxy.authz.errors import (
    BudgetExceededError,
    ControlTokenAsKeyError,
    InvalidKeyError,
    KeyExpiredError,
    KeyRevokedError,
    MissingKeyError,
    ModelNotAllowedError,
)
from llmproxy.authz.keys import CONTROL_TOKEN, KeyHasher, new_key, new_key_id
from llmproxy.authz.records import KeyRecord
from tests.unit.authz.fakes import Clock, FakeKeyStore, FakeUsage

HASHER = KeyHasher(b"k" * 32)


class Setup:
    def __init__(self, **fields: object) -> None:
        self.clock = Clock()
        self.store = FakeKeyStore()
        self.usage = FakeUsage()
        self.key_id = new_key_id()
        self.key = new_key(self.key_id)
        self.record = KeyRecord(
            key_id=self.key_id,
            key_hash=HASHER.digest(self.key),
            tenant="acme",
            user="alice",
            created_at=self.clock.now,
            updated_at=self.clock.now,
            **fields,  # type: ignore[arg-type]
        )
        self.store.records[self.key_id] = self.record
        self.authorizer = Authorizer(self.store, HASHER, self.usage, self.clock)

    def change(self, **fields: object) -> None:
        self.store.records[self.key_id] = dataclasses.replace(self.record, **fields)  # type: ignore[arg-type]


async def test_a_valid_key_gets_its_record() -> None:
    setup = Setup()
    assert await setup.authorizer.authorize(setup.key, "gpt-4o-mini") == setup.record


async def test_no_key_is_missing() -> None:
    with pytest.raises(MissingKeyError) as raised:
        await Setup().authorizer.authorize(None, "m")
    assert raised.value.status == 401


@pytest.mark.parametrize("mangle", ["malformed", "unknown id", "wrong secret"])
async def test_bad_keys_are_invalid_without_saying_why(mangle: str) -> None:
    setup = Setup()
    key = {
        "malformed": "sk-not-ours",
        "unknown id": new_key(new_key_id()),
        "wrong secret": new_key(setup.key_id),
    }[mangle]
    with pytest.raises(InvalidKeyError) as raised:
        await setup.authorizer.authorize(key, "m")
    assert raised.value.status == 401
    assert raised.value.message == "Incorrect API key provided."
    assert key not in raised.value.body().decode()


@pytest.mark.parametrize("token", [CONTROL_TOKEN.new(CONTROL_TOKEN.new_id()), "ct-llmp-junk"])
async def test_a_control_token_is_told_it_is_no_api_key(token: str) -> None:
    setup = Setup()
    with pytest.raises(ControlTokenAsKeyError) as raised:
        await setup.authorizer.authorize(token, "gpt-4o-mini")
    assert (raised.value.status, raised.value.code) == (401, "invalid_api_key")
    assert "is not an API key" in raised.value.message
    assert token not in raised.value.message
    assert setup.store.gets == 0  # decided from the prefix, without a lookup


async def test_a_revoked_key_is_403() -> None:
    setup = Setup()
    setup.change(revoked=True)
    with pytest.raises(KeyRevokedError) as raised:
        await setup.authorizer.authorize(setup.key, "m")
    assert raised.value.status == 403
    assert setup.key_id in raised.value.message


async def test_a_revoked_key_with_a_wrong_secret_says_only_invalid() -> None:
    setup = Setup()
    setup.change(revoked=True)
    with pytest.raises(InvalidKeyError):
        await setup.authorizer.authorize(new_key(setup.key_id), "m")


async def test_a_key_expires_at_its_time() -> None:
    setup = Setup(expires_at=Clock().now + 60)
    await setup.authorizer.authorize(setup.key, "m")
    setup.clock.now += 60
    with pytest.raises(KeyExpiredError) as raised:
        await setup.authorizer.authorize(setup.key, "m")
    assert raised.value.status == 403
    assert "expired at 2027-01-15T08:01:00+00:00" in raised.value.message


@pytest.mark.parametrize(
    ("patterns", "model", "allowed"),
    [
        (("*",), "anything", True),
        (("gpt-4o*",), "gpt-4o-mini", True),
        (("gpt-4o*",), "gpt-4", False),
        (("gpt-4o-mini", "llama-?.?-8b"), "llama-3.1-8b", True),
        (("gpt-4o-mini",), "GPT-4O-MINI", False),
        (("gpt-4o-mini",), "llama-3.1-8b", False),
    ],
)
async def test_models_match_the_allowed_patterns(
    patterns: tuple[str, ...], model: str, allowed: bool
) -> None:
    setup = Setup(allowed_models=patterns)
    if allowed:
        await setup.authorizer.authorize(setup.key, model)
        return
    with pytest.raises(ModelNotAllowedError) as raised:
        await setup.authorizer.authorize(setup.key, model)
    assert raised.value.status == 403
    assert raised.value.param == "model"


async def test_without_a_model_in_the_body_the_router_decides() -> None:
    setup = Setup(allowed_models=("gpt-4o-mini",))
    await setup.authorizer.authorize(setup.key, None)


@pytest.mark.parametrize(
    ("fields", "spend", "period"),
    [
        ({"daily_budget_usd": 1.0}, {"day": 1.0}, "daily"),
        ({"monthly_budget_usd": 5.0}, {"day": 0.5, "month": 5.5}, "monthly"),
        ({"daily_budget_usd": 1.0, "monthly_budget_usd": 5.0}, {"day": 0.2, "month": 5}, "monthly"),
    ],
)
async def test_a_spent_budget_is_429(
    fields: dict[str, float], spend: dict[str, float], period: str
) -> None:
    setup = Setup(**fields)
    for name, amount in spend.items():
        setup.usage.spend[("key", setup.key_id, name)] = amount
    with pytest.raises(BudgetExceededError) as raised:
        await setup.authorizer.authorize(setup.key, "m")
    assert raised.value.status == 429
    assert raised.value.error_type == "insufficient_quota"
    assert f"{period} budget" in raised.value.message


async def test_spend_under_the_budget_passes_and_no_budget_reads_no_spend() -> None:
    setup = Setup(daily_budget_usd=1.0, monthly_budget_usd=10.0)
    setup.usage.spend[("key", setup.key_id, "day")] = 0.99
    await setup.authorizer.authorize(setup.key, "m")
    unlimited = Setup()
    unlimited.usage.spend[("key", unlimited.key_id, "day")] = 1e9
    await unlimited.authorizer.authorize(unlimited.key, "m")


async def test_after_a_rotation_the_old_secret_works_only_for_the_grace_period() -> None:
    setup = Setup()
    new = new_key(setup.key_id)
    setup.change(
        key_hash=HASHER.digest(new),
        previous_key_hash=setup.record.key_hash,
        previous_valid_until=setup.clock.now + 30,
    )
    await setup.authorizer.authorize(new, "m")
    await setup.authorizer.authorize(setup.key, "m")
    setup.clock.now += 30
    await setup.authorizer.authorize(new, "m")
    with pytest.raises(InvalidKeyError):
        await setup.authorizer.authorize(setup.key, "m")
