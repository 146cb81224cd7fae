"""The control command line against a real authz server: control tokens, and whose they are."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from llmproxy.authz.cli import main
from tests.integration.authz.conftest import Instance, StartAuthz, admin_token


async def run(
    instance: Instance, capsys: pytest.CaptureFixture[str], environ: dict[str, str], *argv: str
) -> tuple[int, Any, str]:
    """Exit status, stdout as JSON (None when empty) and stderr of one command.

    In a thread: the CLI's blocking call must not stall the event loop the server runs on.
    """
    status = await asyncio.to_thread(
        main, ["--target", instance.target, *argv], {"USER": "tester", **environ}
    )
    out, err = capsys.readouterr()
    return status, json.loads(out) if out.strip() else None, err


async def test_a_token_made_from_the_shell_works_from_the_shell(
    start_authz: StartAuthz, capsys: pytest.CaptureFixture[str]
) -> None:
    instance = await start_authz()
    bootstrap = {"LLMPROXY_ADMIN_TOKEN": admin_token()}
    status, created, err = await run(
        instance, capsys, bootstrap, "tokens", "create", "--role", "operator", "--name", "alice"
    )
    assert status == 0, err
    secret, token_id = created["secret"], created["token"]["token_id"]
    assert secret.startswith(f"ct-llmp-{token_id}-")
    assert created["token"]["role"] == "ROLE_OPERATOR"
    assert "shown only this once" in err
    assert secret not in err
    # $LLMPROXY_TOKEN comes first: the operator may read keys, not manage tokens.
    mine = {**bootstrap, "LLMPROXY_TOKEN": secret}
    status, listed, err = await run(instance, capsys, mine, "list")
    assert (status, listed, err) == (0, {}, "")
    status, _, err = await run(instance, capsys, mine, "tokens", "list")
    assert status == 1
    assert err.startswith("python -m llmproxy.authz.cli: PERMISSION_DENIED: ListControlTokens")
    assert secret not in err
    status, rotated, err = await run(
        instance, capsys, bootstrap, "tokens", "rotate", token_id, "--grace-period", "1h"
    )
    assert status == 0, err
    assert rotated["secret"] != secret
    assert "previous_secret_expire_time" in rotated["token"]
    status, revoked, err = await run(
        instance, capsys, bootstrap, "tokens", "revoke", token_id, "--reason", "left"
    )
    assert status == 0, err
    assert (revoked["token"]["revoked"], revoked["token"]["revoke_reason"]) == (True, "left")
    status, listed, _ = await run(instance, capsys, bootstrap, "tokens", "list")
    assert (status, listed) == (0, {})
    status, listed, _ = await run(
        instance, capsys, bootstrap, "tokens", "list", "--include-revoked"
    )
    assert [t["token_id"] for t in listed["tokens"]] == [token_id]
    status, audit, _ = await run(instance, capsys, bootstrap, "audit", "--service", "authz")
    assert status == 0
    calls = [(r["method"], r["outcome"], r["actor"]) for r in audit["records"]]
    assert calls == [
        ("RevokeControlToken", "OK", "bootstrap-admin (cli:tester)"),
        ("RotateControlToken", "OK", "bootstrap-admin (cli:tester)"),
        ("ListControlTokens", "PERMISSION_DENIED", f"token:{token_id} (cli:tester)"),
        ("CreateControlToken", "OK", "bootstrap-admin (cli:tester)"),
    ]
    assert secret not in json.dumps(audit)


async def test_without_any_token_the_cli_says_which_to_set(
    start_authz: StartAuthz, capsys: pytest.CaptureFixture[str]
) -> None:
    instance = await start_authz()
    status, out, err = await run(instance, capsys, {}, "tokens", "list")
    assert (status, out) == (2, None)
    assert "set $LLMPROXY_TOKEN to a control token" in err
