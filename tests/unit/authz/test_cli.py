"""The control command line: arguments to requests, its credential, and clear errors."""

from __future__ import annotations

import time

import pytest

from llmproxy._gen.access.v1 import access_pb2
from llmproxy.authz.cli import build_call, main, parser
from llmproxy.common.credentials import CredentialError, cli_token


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
        (["rotate", "k", "--grace-period", "1h"], ("RotateKey", "grace_period_seconds")),
        (["list", "--tenant", "acme", "--include-revoked"], ("ListKeys", "include_revoked")),
        (["audit", "--key-id", "k"], ("ListAuditRecords", "key_id")),
        (["audit", "--service", "router"], ("ListAuditRecords", "service")),
        (["tokens", "create", "--role", "viewer", "--name", "a"], ("CreateControlToken", "role")),
        (["tokens", "list", "--include-revoked"], ("ListControlTokens", "include_revoked")),
        (["tokens", "list", "--page-size", "5"], ("ListControlTokens", "page_size")),
        (["tokens", "rotate", "t", "--grace-period", "1h"], ("RotateControlToken", "token_id")),
        (["tokens", "revoke", "t", "--reason", "left"], ("RevokeControlToken", "reason")),
    ],
)
def test_each_command_names_its_rpc(argv: list[str], expected: tuple[str, str]) -> None:
    method, request = call(*argv)
    assert method == expected[0]
    assert getattr(request, expected[1])  # the option reached its field


def test_rotate_grace_is_parsed_to_seconds() -> None:
    _, request = call("rotate", "k", "--grace", "1h")
    assert request.grace_period_seconds == 3600  # type: ignore[attr-defined]


def test_tokens_create_builds_the_whole_request() -> None:
    method, request = call(
        "tokens", "create", "--role", "Operator", "--name", "alice", "--expire-time",
        "2030-01-31T00:00:00Z",
    )  # fmt: skip
    assert method == "CreateControlToken"
    assert (request.name, request.role) == ("alice", access_pb2.ROLE_OPERATOR)  # type: ignore[attr-defined]
    assert request.expire_time.ToJsonString() == "2030-01-31T00:00:00Z"  # type: ignore[attr-defined]
    _, request = call("tokens", "create", "--role", "admin", "--name", "ci", "--expires-in", "12h")
    expires = request.expire_time.seconds  # type: ignore[attr-defined]
    assert abs(expires - (time.time() + 12 * 3600)) < 5
    _, request = call("tokens", "create", "--role", "viewer", "--name", "ci")
    assert not request.HasField("expire_time")  # type: ignore[attr-defined]


def test_tokens_rotate_and_revoke_name_the_token() -> None:
    _, request = call("tokens", "rotate", "0123456789abcdef", "--grace-period", "15m")
    assert (request.token_id, request.grace_period_seconds) == ("0123456789abcdef", 900)  # type: ignore[attr-defined]
    _, request = call("tokens", "rotate", "0123456789abcdef")
    assert request.grace_period_seconds == 0  # type: ignore[attr-defined]
    _, request = call("tokens", "revoke", "0123456789abcdef")
    assert (request.token_id, request.reason) == ("0123456789abcdef", "")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tokens", "create", "--name", "a"], "the following arguments are required: --role"),
        (["tokens", "create", "--role", "viewer"], "the following arguments are required: --name"),
        (
            ["tokens", "create", "--role", "root", "--name", "a"],
            "unknown role 'root': one of viewer, operator, admin",
        ),
        (
            ["tokens", "create", "--role", "admin", "--name", "a", "--expire-time", "tomorrow"],
            "not a time such as 2030-01-31T00:00:00Z",
        ),
        (
            ["tokens", "create", "--role", "admin", "--name", "a", "--expire-time", "2030-01-31"],
            "give a time zone",
        ),
        (
            [
                "tokens",
                "create",
                "--role",
                "admin",
                "--name",
                "a",
                "--expire-time",
                "2030-01-31T00:00:00Z",
                "--expires-in",
                "1d",
            ],
            "not allowed with argument",
        ),
        (["tokens", "rotate"], "the following arguments are required: token_id"),
        (["tokens"], "the following arguments are required: action"),
        (["audit", "--service", "billing"], "invalid choice: 'billing'"),
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
    assert (
        "set $LLMPROXY_TOKEN to a control token (or $LLMPROXY_ADMIN_TOKEN to the admin token)"
        in capsys.readouterr().err
    )


def test_the_credential_is_the_callers_token_before_the_bootstrap_admin_token() -> None:
    admin_env = "LLMPROXY_ADMIN_TOKEN"
    both = {"LLMPROXY_TOKEN": "mine", admin_env: "bootstrap"}
    assert cli_token(both, admin_env) == "mine"
    assert cli_token({admin_env: "bootstrap"}, admin_env) == "bootstrap"
    assert cli_token({"LLMPROXY_TOKEN": "", admin_env: "b"}, admin_env) == "b"
    with pytest.raises(CredentialError):
        cli_token({}, admin_env)
    # The bootstrap token's variable is the one the configuration names.
    assert cli_token({"BREAK_GLASS": "b", admin_env: "x"}, "BREAK_GLASS") == "b"
