"""The admin command line: arguments to requests, and clear errors."""

from __future__ import annotations

import time

import pytest

from llmproxy.authz.cli import build_call, main, parser


def call(*argv: str) -> tuple[str, object]:
    return build_call(parser().parse_args(list(argv)))


def test_create_builds_the_whole_request() -> None:
    method, request = call(
        "create", "--tenant", "acme", "--user", "al", "--model", "gpt-4o*", "--model", "llama*",
        "--tier", "gold", "--daily-usd", "5", "--expires-in", "30d", "--label", "team=ml",
    )  # fmt: skip
    assert method == "CreateKey"
    assert request.tenant == "acme"  # type: ignore[attr-defined]
    assert list(request.allowed_models) == ["gpt-4o*", "llama*"]  # type: ignore[attr-defined]
    assert request.budget.daily_usd == 5  # type: ignore[attr-defined]
    assert request.budget.monthly_usd == 0  # type: ignore[attr-defined]
    expires = request.expire_time.seconds  # type: ignore[attr-defined]
    assert abs(expires - (time.time() + 30 * 86400)) < 5
    assert dict(request.labels) == {"team": "ml"}  # type: ignore[attr-defined]


def test_update_masks_exactly_the_options_given() -> None:
    method, request = call("update", "0123456789abcdef", "--tier", "gold", "--monthly-usd", "9")
    assert method == "UpdateKey"
    assert list(request.update_mask.paths) == ["tier", "budget.monthly_usd"]  # type: ignore[attr-defined]
    _, request = call("update", "0123456789abcdef", "--no-expiry", "--clear-labels")
    assert list(request.update_mask.paths) == ["expire_time", "labels"]  # type: ignore[attr-defined]
    assert not request.key.HasField("expire_time")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["get", "k"], ("GetKey", "key_id")),
        (["revoke", "k", "--reason", "leak"], ("RevokeKey", "reason")),
        (["rotate", "k", "--grace", "1h"], ("RotateKey", "grace_period_seconds")),
        (["list", "--tenant", "acme", "--include-revoked"], ("ListKeys", "include_revoked")),
        (["audit", "--key-id", "k"], ("ListAuditRecords", "key_id")),
    ],
)
def test_each_command_names_its_rpc(argv: list[str], expected: tuple[str, str]) -> None:
    method, request = call(*argv)
    assert method == expected[0]
    assert getattr(request, expected[1])  # the option reached its field


def test_rotate_grace_is_parsed_to_seconds() -> None:
    _, request = call("rotate", "k", "--grace", "1h")
    assert request.grace_period_seconds == 3600  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["create", "--tenant", "t", "--expires-in", "soon"], "not a duration"),
        (["create", "--tenant", "t", "--label", "novalue"], "not a label"),
        (["rotate", "k", "--grace", "-5"], "not a duration"),
    ],
)
def test_bad_values_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        parser().parse_args(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_update_without_fields_and_a_missing_token_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["update", "0123456789abcdef"], environ={"LLMPROXY_ADMIN_TOKEN": "t"}) == 2
    assert "give at least one field" in capsys.readouterr().err
    assert main(["get", "0123456789abcdef"], environ={}) == 2
    assert "set $LLMPROXY_ADMIN_TOKEN" in capsys.readouterr().err
