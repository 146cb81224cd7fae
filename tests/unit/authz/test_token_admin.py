"""Control token management: what each operation does, and the clear errors for bad input."""

from __future__ import annotations

import re

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from llmproxy._gen.access.v1 import access_pb2
from llmproxy._gen.authz.v1 import authz_pb2
from llmproxy.authz.errors import (
    ConflictError,
    FailedPreconditionError,
    InvalidArgumentError,
    TokenNotFoundError,
)
from llmproxy.authz.keys import CONTROL_TOKEN, KeyHasher, SecretMatch
from llmproxy.authz.records import ControlTokenRecord
from llmproxy.authz.token_admin import ControlTokenAdmin
from llmproxy.common.access import Role
from tests.unit.authz.fakes import Clock, FakeControlTokenStore

HASHER = KeyHasher(b"k" * 32)


def admin() -> tuple[ControlTokenAdmin, FakeControlTokenStore, Clock]:
    store = FakeControlTokenStore()
    clock = Clock()
    return ControlTokenAdmin(store, HASHER, clock), store, clock


def at(seconds: float) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def create_request(**fields: object) -> authz_pb2.CreateControlTokenRequest:
    values: dict[str, object] = {"name": "alice", "role": access_pb2.ROLE_OPERATOR, **fields}
    return authz_pb2.CreateControlTokenRequest(**values)  # type: ignore[arg-type]


async def test_create_stores_only_the_hash_and_returns_the_secret_once() -> None:
    tokens, store, clock = admin()
    record, secret = await tokens.create(create_request(expire_time=at(clock.now + 3600)))
    assert CONTROL_TOKEN.id_of(secret) == record.token_id
    stored = store.records[record.token_id]
    assert secret not in stored.to_json()
    assert secret.rsplit("-", 1)[-1] not in stored.to_json()
    assert HASHER.matches(secret, stored.token_hash)
    assert (stored.name, stored.role, stored.access_role) == ("alice", "operator", Role.OPERATOR)
    assert stored.created_at == clock.now
    assert stored.expires_at == pytest.approx(clock.now + 3600)
    assert (stored.revoked, stored.version, stored.previous_hash) == (False, 1, None)


@pytest.mark.parametrize(
    ("role", "label"),
    [
        (access_pb2.ROLE_VIEWER, "viewer"),
        (access_pb2.ROLE_OPERATOR, "operator"),
        (access_pb2.ROLE_ADMIN, "admin"),
    ],
)
async def test_every_role_can_be_given(role: int, label: str) -> None:
    tokens, _, _ = admin()
    record, _ = await tokens.create(create_request(role=role))
    assert record.role == label
    assert record.expires_at is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "name: required"),
        ({"name": "   "}, "name: required"),
        ({"name": "x" * 101}, "name: at most 100 printable characters"),
        ({"name": "alice\n"}, "name: at most 100 printable characters"),
        ({"name": "al\x00ice"}, "name: at most 100 printable characters"),
        (
            {"role": access_pb2.ROLE_UNSPECIFIED},
            "role: required, one of viewer (ROLE_VIEWER), operator (ROLE_OPERATOR), admin",
        ),
        ({"role": 7}, "role: required, one of viewer"),
        ({"role": -1}, "role: required, one of viewer"),
        ({"expire_time": at(1)}, "expire_time: must be in the future"),
        ({"expire_time": at(1_800_000_000)}, "expire_time: must be in the future"),
    ],
)
async def test_create_refuses_bad_fields_naming_them(
    fields: dict[str, object], message: str
) -> None:
    tokens, store, _ = admin()
    with pytest.raises(InvalidArgumentError, match="^" + re.escape(message)):
        await tokens.create(create_request(**fields))
    assert store.records == {}


async def test_a_name_of_exactly_100_printable_characters_is_fine() -> None:
    tokens, _, _ = admin()
    record, _ = await tokens.create(create_request(name="ci: " + "é" * 96))
    assert len(record.name) == 100


async def test_list_pages_oldest_first_and_hides_revoked_ones_unless_asked() -> None:
    tokens, _, clock = admin()
    created = []
    for i in range(5):
        clock.now += 1
        record, _ = await tokens.create(create_request(name=f"t{i}"))
        created.append(record.token_id)
    await tokens.revoke(authz_pb2.RevokeControlTokenRequest(token_id=created[0]))
    page, token = await tokens.list_tokens(authz_pb2.ListControlTokensRequest(page_size=2))
    assert [r.token_id for r in page] == created[1:3]
    page, token = await tokens.list_tokens(
        authz_pb2.ListControlTokensRequest(page_size=2, page_token=token)
    )
    assert [r.token_id for r in page] == created[3:5]
    assert token == ""
    every, _ = await tokens.list_tokens(authz_pb2.ListControlTokensRequest(include_revoked=True))
    assert [r.token_id for r in every] == created
    assert every[0].revoked


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"page_size": -1}, "page_size: must not be negative"),
        ({"page_token": "garbage!"}, "page_token: not a token this API returned"),
        ({"page_token": "YWJj"}, "page_token: not a token this API returned"),
    ],
)
async def test_list_refuses_bad_paging(request_fields: dict[str, object], message: str) -> None:
    tokens, _, _ = admin()
    with pytest.raises(InvalidArgumentError, match=message):
        await tokens.list_tokens(authz_pb2.ListControlTokensRequest(**request_fields))  # type: ignore[arg-type]


async def test_revoke_is_final_and_says_why() -> None:
    tokens, store, clock = admin()
    record, _ = await tokens.create(create_request())
    revoked = await tokens.revoke(
        authz_pb2.RevokeControlTokenRequest(token_id=record.token_id, reason="left the team")
    )
    assert (revoked.revoked, revoked.revoked_at, revoked.revoke_reason) == (
        True,
        clock.now,
        "left the team",
    )
    assert revoked.version == record.version + 1
    assert store.records[record.token_id] == revoked
    clock.now += 10
    again = await tokens.revoke(authz_pb2.RevokeControlTokenRequest(token_id=record.token_id))
    assert again == revoked


async def test_rotate_gives_a_new_secret_and_a_grace_for_the_old_one() -> None:
    tokens, store, clock = admin()
    record, old = await tokens.create(create_request())
    rotated, new = await tokens.rotate(
        authz_pb2.RotateControlTokenRequest(token_id=record.token_id, grace_period_seconds=60)
    )
    assert new != old
    assert CONTROL_TOKEN.id_of(new) == record.token_id
    assert rotated.rotated_at == clock.now
    assert rotated.previous_valid_until == clock.now + 60
    assert rotated.secret_match(HASHER, new, clock.now) is SecretMatch.CURRENT
    assert rotated.secret_match(HASHER, old, clock.now + 59) is SecretMatch.PREVIOUS
    assert rotated.secret_match(HASHER, old, clock.now + 60) is SecretMatch.NONE
    assert store.records[record.token_id] == rotated
    immediate, newest = await tokens.rotate(
        authz_pb2.RotateControlTokenRequest(token_id=record.token_id)
    )
    assert immediate.previous_hash is None
    assert immediate.secret_match(HASHER, new, clock.now) is SecretMatch.NONE
    assert immediate.secret_match(HASHER, newest, clock.now) is SecretMatch.CURRENT


async def test_a_grace_of_exactly_30_days_is_fine() -> None:
    tokens, _, clock = admin()
    record, _ = await tokens.create(create_request())
    rotated, _ = await tokens.rotate(
        authz_pb2.RotateControlTokenRequest(
            token_id=record.token_id, grace_period_seconds=30 * 86400
        )
    )
    assert rotated.previous_valid_until == clock.now + 30 * 86400


@pytest.mark.parametrize("grace", [-1, 30 * 86400 + 1])
async def test_rotate_refuses_graces_out_of_bounds(grace: int) -> None:
    tokens, store, _ = admin()
    record, _ = await tokens.create(create_request())
    with pytest.raises(InvalidArgumentError, match="grace_period_seconds: must be between 0 and"):
        await tokens.rotate(
            authz_pb2.RotateControlTokenRequest(
                token_id=record.token_id, grace_period_seconds=grace
            )
        )
    assert store.records[record.token_id] == record


async def test_a_revoked_token_cannot_be_rotated() -> None:
    tokens, _, _ = admin()
    record, _ = await tokens.create(create_request())
    await tokens.revoke(authz_pb2.RevokeControlTokenRequest(token_id=record.token_id))
    with pytest.raises(FailedPreconditionError, match="is revoked: it cannot be rotated"):
        await tokens.rotate(authz_pb2.RotateControlTokenRequest(token_id=record.token_id))


@pytest.mark.parametrize("token_id", ["", "nope", "0123456789ABCDEF", "0" * 17])
async def test_malformed_ids_are_invalid_arguments(token_id: str) -> None:
    tokens, _, _ = admin()
    message = "is not a control token id \\(16 hex digits\\)"
    with pytest.raises(InvalidArgumentError, match="^token_id: .*" + message):
        await tokens.revoke(authz_pb2.RevokeControlTokenRequest(token_id=token_id))
    with pytest.raises(InvalidArgumentError, match="^token_id: .*" + message):
        await tokens.rotate(authz_pb2.RotateControlTokenRequest(token_id=token_id))
    with pytest.raises(InvalidArgumentError, match=r"^token_id: "):
        await tokens.get(token_id)


async def test_unknown_ids_are_not_found() -> None:
    tokens, _, _ = admin()
    with pytest.raises(TokenNotFoundError, match=r"no control token with token_id '0{16}'"):
        await tokens.revoke(authz_pb2.RevokeControlTokenRequest(token_id="0" * 16))
    with pytest.raises(TokenNotFoundError):
        await tokens.rotate(authz_pb2.RotateControlTokenRequest(token_id="0" * 16))


async def test_a_revoke_reason_is_checked() -> None:
    tokens, _, _ = admin()
    record, _ = await tokens.create(create_request())
    with pytest.raises(InvalidArgumentError, match=r"^reason: at most 256 printable"):
        await tokens.revoke(
            authz_pb2.RevokeControlTokenRequest(token_id=record.token_id, reason="x" * 257)
        )


class RevokedMeanwhile(FakeControlTokenStore):
    """Another admin's revocation lands between the first read and the first write."""

    async def replace(self, record: ControlTokenRecord) -> bool:
        if not self.raced:
            self.raced = True
            current = self.records[record.token_id]
            self.records[record.token_id] = current.changed(revoked=True)
        return await super().replace(record)

    raced = False


async def test_a_rotation_never_undoes_a_concurrent_revocation() -> None:
    store = RevokedMeanwhile()
    tokens = ControlTokenAdmin(store, HASHER, Clock())
    record, _ = await tokens.create(create_request())
    with pytest.raises(FailedPreconditionError):
        await tokens.rotate(authz_pb2.RotateControlTokenRequest(token_id=record.token_id))
    assert store.raced
    assert store.records[record.token_id].revoked
    assert store.records[record.token_id].token_hash == record.token_hash


async def test_endless_conflicts_are_reported() -> None:
    tokens, store, _ = admin()
    record, _ = await tokens.create(create_request())
    store.fail_replaces = 100
    with pytest.raises(ConflictError, match=f"control token {record.token_id} changed"):
        await tokens.revoke(authz_pb2.RevokeControlTokenRequest(token_id=record.token_id))
