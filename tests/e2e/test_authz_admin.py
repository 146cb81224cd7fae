"""The admin API through Envoy's control listener: the README's grpcurl commands, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmproxy.authz.cli import main as cli
from llmproxy.devstack.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
SERVICE = "llmproxy.authz.v1.AuthzService"


def grpcurl(
    stack: Stack, method: str, body: dict[str, Any], *, token: str | None = ""
) -> subprocess.CompletedProcess[str]:
    envoy = stack.config.envoy
    if token == "":
        token = stack.environ[stack.config.control.admin_token_env]
    headers = ["-H", f"authorization: Bearer {token}"] if token else []
    return subprocess.run(
        [
            GRPCURL, "-plaintext", "-protoset", str(ROOT / "envoy" / "llmproxy.protoset"),
            *headers, "-d", json.dumps(body), f"{envoy.host}:{envoy.control_port}",
            f"{SERVICE}/{method}",
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def call(stack: Stack, method: str, body: dict[str, Any]) -> dict[str, Any]:
    done = grpcurl(stack, method, body)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_every_admin_rpc_through_the_control_listener(stack_logs: Stack) -> None:
    created = call(
        stack_logs,
        "CreateKey",
        {
            "tenant": "acme",
            "user": "alice",
            "allowed_models": ["gpt-4o*"],
            "tier": "gold",
            "budget": {"daily_usd": 5},
            "expire_time": "2030-01-01T00:00:00Z",
            "labels": {"team": "ml"},
        },
    )
    key_id = created["key"]["key_id"]
    assert created["secret"].startswith(f"sk-llmp-{key_id}-")
    assert created["key"]["expire_time"] == "2030-01-01T00:00:00Z"
    got = call(stack_logs, "GetKey", {"key_id": key_id})
    assert got["key"]["tier"] == "gold"
    assert "secret" not in got
    listed = call(stack_logs, "ListKeys", {"tenant": "acme", "page_size": 10})
    assert key_id in [k["key_id"] for k in listed["keys"]]
    updated = call(
        stack_logs,
        "UpdateKey",
        {"key": {"key_id": key_id, "tier": "silver"}, "update_mask": {"paths": ["tier"]}},
    )
    assert updated["key"]["tier"] == "silver"
    rotated = call(stack_logs, "RotateKey", {"key_id": key_id, "grace_period_seconds": 3600})
    assert rotated["secret"] != created["secret"]
    assert "previous_secret_expire_time" in rotated["key"]
    revoked = call(stack_logs, "RevokeKey", {"key_id": key_id, "reason": "demo"})
    assert revoked["key"]["revoked"] is True
    audit = call(stack_logs, "ListAuditRecords", {"key_id": key_id, "page_size": 10})
    # Changes are audited; reads (GetKey, ListKeys) are not.
    assert [r["method"] for r in audit["records"]] == [
        "RevokeKey",
        "RotateKey",
        "UpdateKey",
        "CreateKey",
    ]
    assert all(r["actor"] == "bootstrap-admin" for r in audit["records"])
    assert all(r["service"] == "authz" for r in audit["records"])


@pytest.mark.parametrize(
    ("token", "status"),
    [(None, "Unauthenticated"), ("wrong-token", "Unauthenticated")],
)
def test_admin_calls_without_the_token_are_refused(
    stack_logs: Stack, token: str | None, status: str
) -> None:
    done = grpcurl(stack_logs, "ListKeys", {}, token=token)
    assert done.returncode != 0
    assert f"Code: {status}" in done.stderr


def test_bad_input_is_invalid_argument_naming_the_field(stack_logs: Stack) -> None:
    done = grpcurl(stack_logs, "CreateKey", {"tenant": "acme", "budget": {"daily_usd": -1}})
    assert "Code: InvalidArgument" in done.stderr
    assert "budget.daily_usd: must be between 0" in done.stderr


def cli_env(stack: Stack) -> dict[str, str]:
    name = stack.config.control.admin_token_env
    return {name: stack.environ[name], "USER": "ops"}


def test_the_cli_runs_every_admin_operation(
    stack_logs: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--config", str(stack_logs.config_path)]
    env = cli_env(stack_logs)

    def run(*argv: str) -> dict[str, Any]:
        assert cli([*base, *argv], environ=env) == 0, capsys.readouterr().err
        result: dict[str, Any] = json.loads(capsys.readouterr().out)
        return result

    created = run("create", "--tenant", "cli", "--model", "gpt-4o*", "--daily-usd", "2")
    key_id = created["key"]["key_id"]
    assert created["secret"].startswith("sk-llmp-")
    assert run("get", key_id)["key"]["budget"]["daily_usd"] == 2
    assert key_id in [k["key_id"] for k in run("list", "--tenant", "cli")["keys"]]
    assert run("update", key_id, "--tier", "gold")["key"]["tier"] == "gold"
    assert run("rotate", key_id, "--grace", "10m")["secret"] != created["secret"]
    assert run("revoke", key_id, "--reason", "done")["key"]["revoked"] is True
    records = run("audit", "--key-id", key_id)["records"]
    assert records[0]["method"] == "RevokeKey"
    assert records[0]["actor"] == "bootstrap-admin (cli:ops)"
    assert cli([*base, "get", "ffffffffffffffff"], environ=env) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_the_cli_is_a_module_one_can_run(stack_logs: Stack) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llmproxy.authz.cli", "--config", str(stack_logs.config_path),
         "create", "--tenant", "cli-process"],
        capture_output=True, text=True, timeout=30, check=False,
        env={**cli_env(stack_logs), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["secret"].startswith("sk-llmp-")
    assert "shown only this once" in done.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "llmproxy.authz.cli", "--config", str(stack_logs.config_path),
         "list"],
        capture_output=True, text=True, timeout=30, check=False,
        env={"LLMPROXY_ADMIN_TOKEN": "wrong", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert refused.returncode == 1
    assert "UNAUTHENTICATED: the control token is not valid: malformed token" in refused.stderr
