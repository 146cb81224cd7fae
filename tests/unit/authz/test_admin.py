"""Key management: what each admin operation does, and the clear errors for bad input."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from llmproxy._gen.authz.v1 import authz_pb2
from llmproxy.authz.admin import KeyAdmin
from llmproxy.authz.errors import (
    ConflictError,
    FailedPreconditionError,
    InvalidArgumentError,
    KeyNotFoundError,
)
from llmproxy.authz.keys import KeyHasher, key_id_of
from llmproxy.common.audit import AuditEntry
from tests.unit.authz.fakes import Clock, FakeKeyStore

HASHER = KeyHasher(b"k" * 32)


def admin() -> tuple[KeyAdmin, FakeKeyStore, Clock]:
    store = FakeKeyStore()
    clock = Clock()
    return KeyAdmin(store, HASHER, clock), store, clock


def at(seconds: float) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


async def test_create_stores_only_the_hash_and_returns_the_secret_once() -> None:
    keys, store, clock = admin()
    record, secret = await keys.create(
        authz_pb2.CreateKeyRequest(
            tenant="acme",
            user="alice@acme.example",
            allowed_models=["gpt-4o*"],
            tier="gold",
            budget=authz_pb2.Budget(daily_usd=5, monthly_usd=50),
            expire_time=at(clock.now + 3600),
            labels={"team": "ml"},
        )
    )
    assert key_id_of(secret) == record.key_id
    stored = store.records[record.key_id]
    assert secret not in stored.to_json()
    assert HASHER.matches(secret, stored.key_hash)
    assert (stored.tenant, stored.user, stored.tier) == ("acme", "alice@acme.example", "gold")
    assert stored.allowed_models == ("gpt-4o*",)
    assert (stored.daily_budget_usd, stored.monthly_budget_usd) == (5, 50)
    assert stored.expires_at == pytest.approx(clock.now + 3600)
    assert stored.labels == {"team": "ml"}
    assert store.invalidations == [record.key_id]


async def test_create_defaults() -> None:
    keys, _, _ = admin()
    record, _ = await keys.create(authz_pb2.CreateKeyRequest(tenant="acme"))
    assert (record.user, record.tier, record.allowed_models) == ("default", "default", ("*",))
    assert record.expires_at is None
    assert (record.daily_budget_usd, record.monthly_budget_usd) == (0, 0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "tenant: '' must be"),
        ({"tenant": "a b"}, "tenant: 'a b' must be"),
        ({"tenant": "x" * 65}, "tenant:"),
        ({"tenant": "t", "user": "bad\nuser"}, "user:"),
        ({"tenant": "t", "tier": "gold tier"}, "tier:"),
        ({"tenant": "t", "name": "x" * 300}, "name: at most 256"),
        ({"tenant": "t", "allowed_models": ["gpt 4"]}, "allowed_models: 'gpt 4'"),
        ({"tenant": "t", "allowed_models": [""]}, "allowed_models: ''"),
        ({"tenant": "t", "allowed_models": ["m"] * 101}, "allowed_models: at most 100 patterns"),
        ({"tenant": "t", "budget": authz_pb2.Budget(daily_usd=-1)}, "budget.daily_usd"),
        (
            {"tenant": "t", "budget": authz_pb2.Budget(monthly_usd=float("nan"))},
            "budget.monthly_usd",
        ),
        ({"tenant": "t", "expire_time": at(1)}, "expire_time: must be in the future"),
        ({"tenant": "t", "labels": {"Bad Key": "v"}}, "labels: key 'Bad Key'"),
        ({"tenant": "t", "labels": {"k": "v\x00"}}, "labels[k]"),
        ({"tenant": "t", "labels": {f"k{i}": "v" for i in range(33)}}, "labels: at most 32 labels"),
    ],
)
async def test_create_refuses_bad_fields_naming_them(
    fields: dict[str, object], message: str
) -> None:
    keys, store, _ = admin()
    with pytest.raises(
        InvalidArgumentError, match="^" + message.replace("[", r"\[").replace("(", r"\(")
    ):
        await keys.create(authz_pb2.CreateKeyRequest(**fields))  # type: ignore[arg-type]
    assert store.records == {}


async def test_get_and_not_found() -> None:
    keys, _, _ = admin()
    record, _ = await keys.create(authz_pb2.CreateKeyRequest(tenant="acme"))
    assert await keys.get(record.key_id) == record
    with pytest.raises(KeyNotFoundError, match="0000000000000000"):
        await keys.get("0000000000000000")
    with pytest.raises(InvalidArgumentError, match="key_id: 'nope' is not a key id"):
        await keys.get("nope")


async def test_list_pages_in_creation_order_and_filters() -> None:
    keys, _, clock = admin()
    created = []
    for i in range(5):
        clock.now += 1
        record, _ = await keys.create(authz_pb2.CreateKeyRequest(tenant="a" if i % 2 else "b"))
        created.append(record)
    await keys.revoke(authz_pb2.RevokeKeyRequest(key_id=created[0].key_id))
    page, token = await keys.list_keys(authz_pb2.ListKeysRequest(page_size=2))
    assert [r.key_id for r in page] == [c.key_id for c in created[1:3]]
    page, token = await keys.list_keys(authz_pb2.ListKeysRequest(page_size=2, page_token=token))
    assert [r.key_id for r in page] == [c.key_id for c in created[3:5]]
    assert token == ""
    every, _ = await keys.list_keys(authz_pb2.ListKeysRequest(include_revoked=True))
    assert [r.key_id for r in every] == [c.key_id for c in created]
    only_a, _ = await keys.list_keys(authz_pb2.ListKeysRequest(tenant="a"))
    assert [r.key_id for r in only_a] == [created[1].key_id, created[3].key_id]


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"page_size": -1}, "page_size: must not be negative"),
        ({"page_token": "garbage!"}, "page_token: not a token this API returned"),
        ({"page_token": "YWJj"}, "page_token: not a token this API returned"),
        ({"tenant": "no spaces"}, "tenant:"),
    ],
)
async def test_list_refuses_bad_paging(request_fields: dict[str, object], message: str) -> None:
    keys, _, _ = admin()
    with pytest.raises(InvalidArgumentError, match=message):
        await keys.list_keys(authz_pb2.ListKeysRequest(**request_fields))  # type: ignore[arg-type]


async def test_revoke_is_final_and_published() -> None:
    keys, store, clock = admin()
    record, _ = await keys.create(authz_pb2.CreateKeyRequest(tenant="acme"))
    store.invalidations.clear()
    revoked = await keys.revoke(
        authz_pb2.RevokeKeyRequest(key_id=record.key_id, reason="leaked in a gist")
    )
    assert revoked.revoked
    assert revoked.revoked_at == clock.now
    assert revoked.revoke_reason == "leaked in a gist"
    assert revoked.version == record.version + 1
    assert store.invalidations == [record.key_id]
    again = await keys.revoke(authz_pb2.RevokeKeyRequest(key_id=record.key_id))
    assert again == revoked


async def test_rotate_gives_a_new_secret_and_a_grace_for_the_old_one() -> None:
    keys, store, clock = admin()
    record, old = await keys.create(authz_pb2.CreateKeyRequest(tenant="acme"))
    rotated, new = await keys.rotate(
        authz_pb2.RotateKeyRequest(key_id=record.key_id, grace_period_seconds=60)
    )
    assert new != old
    assert key_id_of(new) == record.key_id
    assert rotated.secret_matches(HASHER, new, clock.now)
    assert rotated.secret_matches(HASHER, old, clock.now + 59)
    assert not rotated.secret_matches(HASHER, old, clock.now + 60)
    assert store.invalidations[-1] == record.key_id
    immediate, newest = await keys.rotate(authz_pb2.RotateKeyRequest(key_id=record.key_id))
    assert not immediate.secret_matches(HASHER, new, clock.now)
    assert immediate.secret_matches(HASHER, newest, clock.now)


async def test_rotate_refuses_revoked_keys_and_long_graces() -> None:
    keys, _, _ = admin()
    record, _ = await keys.create(authz_pb2.CreateKeyRequest(tenant="acme"))
    with pytest.raises(InvalidArgumentError, match="grace_period_seconds"):
        await keys.rotate(authz_pb2.RotateKeyRequest(key_id=record.key_id, grace_period_seconds=-1))
    await keys.revoke(authz_pb2.RevokeKeyRequest(key_id=record.key_id))
    with pytest.raises(FailedPreconditionError, match="revoked"):
        await keys.rotate(authz_pb2.RotateKeyRequest(key_id=record.key_id))


def update(key_id: str, paths: list[str], **fields: object) -> authz_pb2.UpdateKeyRequest:
    request = authz_pb2.UpdateKeyRequest(key=authz_pb2.ApiKey(key_id=key_id, **fields))  # type: ignore[arg-type]
    request.update_mask.paths.extend(paths)
    return request


async def test_update_changes_only_the_masked_fields() -> None:
    keys, store, clock = admin()
    record, _ = await keys.create(
        authz_pb2.CreateKeyRequest(tenant="acme", tier="gold", name="old")
    )
    updated, paths = await keys.update(
        update(
            record.key_id,
            ["allowed_models", "budget.daily_usd", "expire_time", "labels"],
            allowed_models=["gpt-4o-mini"],
            tier="ignored",
            budget=authz_pb2.Budget(daily_usd=2, monthly_usd=99),
            expire_time=at(clock.now + 10),
            labels={"env": "prod"},
        )
    )
    assert paths == ["allowed_models", "budget.daily_usd", "expire_time", "labels"]
    assert updated.allowed_models == ("gpt-4o-mini",)
    assert (updated.tier, updated.name) == ("gold", "old")
    assert (updated.daily_budget_usd, updated.monthly_budget_usd) == (2, 0)
    assert updated.expires_at == pytest.approx(clock.now + 10)
    assert updated.labels == {"env": "prod"}
    assert store.records[record.key_id] == updated
    cleared, _ = await keys.update(update(record.key_id, ["expire_time", "budget"]))
    assert cleared.expires_at is None
    assert (cleared.daily_budget_usd, cleared.monthly_budget_usd) == (0, 0)


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ([], "update_mask: name the fields"),
        (["tenant"], "update_mask: 'tenant' cannot be updated"),
        (["revoked"], "update_mask: 'revoked' cannot be updated"),
        (["key_hash"], "update_mask: 'key_hash' cannot be updated"),
    ],
)
async def test_update_refuses_bad_masks(paths: list[str], message: str) -> None:
    keys, _, _ = admin()
    record, _ = await keys.create(authz_pb2.CreateKeyRequest(tenant="acme"))
    with pytest.raises(InvalidArgumentError, match=message):
        await keys.update(update(record.key_id, paths, tenant="other"))


async def test_update_never_undoes_a_concurrent_revocation() -> None:
    keys, store, _ = admin()
    record, _ = await keys.create(authz_pb2.CreateKeyRequest(tenant="acme"))
    store.fail_replaces = 1  # as if a revocation landed between the read and the write
    await keys.revoke(authz_pb2.RevokeKeyRequest(key_id=record.key_id))
    updated, _ = await keys.update(update(record.key_id, ["tier"], tier="gold"))
    assert updated.revoked
    assert updated.tier == "gold"


async def test_endless_conflicts_are_reported() -> None:
    keys, store, _ = admin()
    record, _ = await keys.create(authz_pb2.CreateKeyRequest(tenant="acme"))
    store.fail_replaces = 100
    with pytest.raises(ConflictError, match="changed concurrently"):
        await keys.update(update(record.key_id, ["tier"], tier="gold"))


async def test_update_of_an_unknown_key_is_not_found() -> None:
    keys, _, _ = admin()
    with pytest.raises(KeyNotFoundError):
        await keys.update(update("0123456789abcdef", ["tier"], tier="gold"))


async def test_audit_pages_newest_first_and_filters_by_key_and_service() -> None:
    keys, store, _ = admin()
    for i in range(7):
        store.add_audit(
            AuditEntry(
                time=i,
                method="GetKey",
                actor="bootstrap-admin",
                peer="p",
                outcome="OK",
                key_id="0123456789abcdef" if i % 2 else "",
                service="router" if i % 3 == 0 else "authz",
            )
        )
    page, token = await keys.list_audit(authz_pb2.ListAuditRecordsRequest(page_size=3))
    assert [e.time for e in page] == [6, 5, 4]
    page, token = await keys.list_audit(
        authz_pb2.ListAuditRecordsRequest(page_size=3, page_token=token)
    )
    assert [e.time for e in page] == [3, 2, 1]
    page, token = await keys.list_audit(
        authz_pb2.ListAuditRecordsRequest(page_size=3, page_token=token)
    )
    assert ([e.time for e in page], token) == ([0], "")
    mine, _ = await keys.list_audit(authz_pb2.ListAuditRecordsRequest(key_id="0123456789abcdef"))
    assert [e.time for e in mine] == [5, 3, 1]
    router, _ = await keys.list_audit(authz_pb2.ListAuditRecordsRequest(service="router"))
    assert [e.time for e in router] == [6, 3, 0]
    both, _ = await keys.list_audit(
        authz_pb2.ListAuditRecordsRequest(service="router", key_id="0123456789abcdef")
    )
    assert [e.time for e in both] == [3]
    # A filtered page is full even when its entries are spread over several batches.
    first, token = await keys.list_audit(
        authz_pb2.ListAuditRecordsRequest(service="authz", page_size=2)
    )
    rest, last = await keys.list_audit(
        authz_pb2.ListAuditRecordsRequest(service="authz", page_size=2, page_token=token)
    )
    assert ([e.time for e in first], [e.time for e in rest]) == ([5, 4], [2, 1])
    assert last != ""


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"page_token": "eA=="}, "page_token: not a token this API returned"),
        ({"service": "billing"}, "service: 'billing' is not a service; one of router, "),
        ({"key_id": "nope"}, "key_id: 'nope' is not a key id"),
        ({"page_size": -1}, "page_size: must not be negative"),
    ],
)
async def test_audit_refuses_bad_filters(request_fields: dict[str, object], message: str) -> None:
    keys, _, _ = admin()
    with pytest.raises(InvalidArgumentError, match=message):
        await keys.list_audit(authz_pb2.ListAuditRecordsRequest(**request_fields))  # type: ignore[arg-type]
