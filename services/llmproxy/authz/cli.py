"""`python -m llmproxy.authz.cli`: the authz control API from a shell, for operators without
grpcurl: API keys, control tokens (`tokens ...`) and the audit trail.

Calls go to Envoy's control listener from the configuration (or --target, e.g. the service's
own port) with the caller's control token from $LLMPROXY_TOKEN or, when that is unset, the
bootstrap admin token from the variable `control.admin_token_env` names
($LLMPROXY_ADMIN_TOKEN by default): a token is never taken on the command line, where `ps`
would show it. Answers are printed as JSON (a new secret once, on stdout only); refusals go to
stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy.common.access import Role
from llmproxy.common.contract import ACTOR_METADATA, SERVICES
from llmproxy.common.credentials import CredentialError, bearer_metadata, cli_token
from llmproxy.common.errors import ConfigError, LlmproxyError
from llmproxy.common.timestamps import timestamp
from llmproxy.config import load_config

PROG = "python -m llmproxy.authz.cli"
# Calls whose answer holds a new secret: printed once, with a reminder on stderr.
SECRET_CALLS = frozenset({"CreateKey", "RotateKey", "CreateControlToken", "RotateControlToken"})
_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(LlmproxyError):
    """A command-line value is invalid."""


def duration_s(text: str) -> int:
    """Seconds in `90`, `90s`, `15m`, `12h` or `30d`."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 15m, 12h, 30d")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def role(text: str) -> int:
    """A control token's role: viewer, operator or admin."""
    try:
        return Role.parse(text).value
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def rfc3339(text: str) -> float:
    """Unix seconds of a time such as 2030-01-31T00:00:00Z (a time zone is required)."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time such as 2030-01-31T00:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a time zone, e.g. a final Z for UTC")
    return parsed.timestamp()


def label(text: str) -> tuple[str, str]:
    """A `key=value` label."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not a label: use key=value")
    return key, value


def _key_fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", help="the user within the tenant")
    parser.add_argument("--name", help="a name for people")
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="PATTERN",
        help="an allowed model pattern (shell wildcards); repeat for more; default every model",
    )
    parser.add_argument("--tier", help="the rate-limit tier")
    parser.add_argument("--daily-usd", type=float, help="daily budget in USD (0: none)")
    parser.add_argument("--monthly-usd", type=float, help="monthly budget in USD (0: none)")
    parser.add_argument(
        "--expires-in", type=duration_s, metavar="DURATION", help="expire after 90s, 12h, 30d..."
    )
    parser.add_argument(
        "--label",
        action="append",
        dest="labels",
        type=label,
        metavar="KEY=VALUE",
        help="a label; repeat for more",
    )


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    top.add_argument("--config", help="configuration file (default: $LLMPROXY_CONFIG)")
    top.add_argument(
        "--target", help="host:port of the admin API (default: Envoy's control listener)"
    )
    commands = top.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key (its secret is printed once)")
    create.add_argument("--tenant", required=True, help="the tenant the key belongs to")
    _key_fields(create)
    commands.add_parser("get", help="show a key").add_argument("key_id")
    listing = commands.add_parser("list", help="list keys, oldest first")
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--page-size", type=int, default=0, help="keys per page (default 50)")
    listing.add_argument("--page-token", default="", help="next_page_token of the last page")
    listing.add_argument("--include-revoked", action="store_true", help="list revoked keys too")
    revoke = commands.add_parser("revoke", help="revoke a key for good")
    revoke.add_argument("key_id")
    revoke.add_argument("--reason", default="", help="why, for the audit trail")
    rotate = commands.add_parser("rotate", help="give a key a new secret (printed once)")
    rotate.add_argument("key_id")
    _grace(rotate)
    update = commands.add_parser("update", help="change some of a key's fields")
    update.add_argument("key_id")
    _key_fields(update)
    update.add_argument("--no-expiry", action="store_true", help="remove the expiry time")
    update.add_argument("--clear-labels", action="store_true", help="remove every label")
    audit = commands.add_parser(
        "audit", help="the audit trail of every service's control calls, newest first"
    )
    audit.add_argument("--key-id", default="", help="only calls about this key")
    audit.add_argument(
        "--service", default="", choices=SERVICES, help="only calls this service handled"
    )
    _paging(audit, "records")
    _token_commands(commands.add_parser("tokens", help="control tokens of people and tools"))
    return top


def _grace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grace-period",
        "--grace",
        dest="grace",
        type=duration_s,
        default=0,
        metavar="DURATION",
        help="how long the old secret keeps working: 90s, 15m, 12h, 30d (default: not at all)",
    )


def _paging(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--page-size", type=int, default=0, help=f"{what} per page (default 50)")
    parser.add_argument("--page-token", default="", help="next_page_token of the last page")


def _token_commands(tokens: argparse.ArgumentParser) -> None:
    commands = tokens.add_subparsers(dest="action", required=True)
    create = commands.add_parser(
        "create", help="create a control token (its secret is printed once)"
    )
    create.add_argument("--role", type=role, required=True, help="viewer, operator or admin")
    create.add_argument("--name", required=True, help="who or what holds it (a person, a CI job)")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument(
        "--expire-time", type=rfc3339, metavar="TIME", help="when it stops working (RFC 3339)"
    )
    expiry.add_argument(
        "--expires-in", type=duration_s, metavar="DURATION", help="expire after 12h, 30d..."
    )
    listing = commands.add_parser("list", help="list control tokens, oldest first")
    listing.add_argument("--include-revoked", action="store_true", help="list revoked ones too")
    _paging(listing, "tokens")
    rotate = commands.add_parser("rotate", help="give a token a new secret (printed once)")
    rotate.add_argument("token_id")
    _grace(rotate)
    revoke = commands.add_parser("revoke", help="revoke a control token for good")
    revoke.add_argument("token_id")
    revoke.add_argument("--reason", default="", help="why, for the audit trail")


def _budget(args: argparse.Namespace) -> authz_pb2.Budget | None:
    if args.daily_usd is None and args.monthly_usd is None:
        return None
    return authz_pb2.Budget(daily_usd=args.daily_usd or 0.0, monthly_usd=args.monthly_usd or 0.0)


def create_request(args: argparse.Namespace) -> authz_pb2.CreateKeyRequest:
    """CreateKeyRequest from `create`'s options."""
    return authz_pb2.CreateKeyRequest(
        tenant=args.tenant,
        user=args.user or "",
        name=args.name or "",
        allowed_models=args.models or [],
        tier=args.tier or "",
        budget=_budget(args),
        expire_time=timestamp(time.time() + args.expires_in) if args.expires_in else None,
        labels=dict(args.labels or []),
    )


def update_request(args: argparse.Namespace) -> authz_pb2.UpdateKeyRequest:
    """UpdateKeyRequest with a mask of the options given to `update`."""
    key = authz_pb2.ApiKey(key_id=args.key_id)
    paths = []
    for option, path in (("user", "user"), ("name", "name"), ("tier", "tier")):
        value = getattr(args, option)
        if value is not None:
            setattr(key, path, value)
            paths.append(path)
    if args.models is not None:
        key.allowed_models.extend(args.models)
        paths.append("allowed_models")
    for option, path in (("daily_usd", "daily_usd"), ("monthly_usd", "monthly_usd")):
        value = getattr(args, option)
        if value is not None:
            setattr(key.budget, path, value)
            paths.append(f"budget.{path}")
    if args.expires_in is not None and args.no_expiry:
        raise UsageError("--expires-in and --no-expiry exclude each other")
    if args.expires_in is not None:
        key.expire_time.FromSeconds(int(time.time()) + args.expires_in)
        paths.append("expire_time")
    if args.no_expiry:
        paths.append("expire_time")
    if args.labels is not None or args.clear_labels:
        key.labels.update(dict(args.labels or []))
        paths.append("labels")
    if not paths:
        raise UsageError("update: give at least one field to change")
    request = authz_pb2.UpdateKeyRequest(key=key)
    request.update_mask.paths.extend(paths)
    return request


def token_call(args: argparse.Namespace) -> tuple[str, Message]:
    """The RPC name and request of a `tokens` command."""
    if args.action == "create":
        expires = args.expire_time
        if args.expires_in is not None:
            expires = time.time() + args.expires_in
        return "CreateControlToken", authz_pb2.CreateControlTokenRequest(
            name=args.name,
            role=args.role,
            expire_time=timestamp(expires) if expires is not None else None,
        )
    if args.action == "list":
        return "ListControlTokens", authz_pb2.ListControlTokensRequest(
            page_size=args.page_size,
            page_token=args.page_token,
            include_revoked=args.include_revoked,
        )
    if args.action == "rotate":
        return "RotateControlToken", authz_pb2.RotateControlTokenRequest(
            token_id=args.token_id, grace_period_seconds=args.grace
        )
    return "RevokeControlToken", authz_pb2.RevokeControlTokenRequest(
        token_id=args.token_id, reason=args.reason
    )


def build_call(args: argparse.Namespace) -> tuple[str, Message]:
    """The RPC name and request for the parsed command line."""
    builders: dict[str, Callable[[], tuple[str, Message]]] = {
        "create": lambda: ("CreateKey", create_request(args)),
        "get": lambda: ("GetKey", authz_pb2.GetKeyRequest(key_id=args.key_id)),
        "list": lambda: (
            "ListKeys",
            authz_pb2.ListKeysRequest(
                tenant=args.tenant or "",
                page_size=args.page_size,
                page_token=args.page_token,
                include_revoked=args.include_revoked,
            ),
        ),
        "revoke": lambda: (
            "RevokeKey",
            authz_pb2.RevokeKeyRequest(key_id=args.key_id, reason=args.reason),
        ),
        "rotate": lambda: (
            "RotateKey",
            authz_pb2.RotateKeyRequest(key_id=args.key_id, grace_period_seconds=args.grace),
        ),
        "update": lambda: ("UpdateKey", update_request(args)),
        "audit": lambda: (
            "ListAuditRecords",
            authz_pb2.ListAuditRecordsRequest(
                key_id=args.key_id,
                service=args.service,
                page_size=args.page_size,
                page_token=args.page_token,
            ),
        ),
        "tokens": lambda: token_call(args),
    }
    return builders[args.command]()


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """Run one command; returns the exit status."""
    env = dict(os.environ) if environ is None else environ
    args = parser().parse_args(argv)
    try:
        config = load_config(args.config, env)
        method, request = build_call(args)
    except (ConfigError, UsageError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        token = cli_token(env, config.control.admin_token_env)
    except CredentialError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    target = args.target or f"{config.envoy.host}:{config.envoy.control_port}"
    user = env.get("USER", "")
    metadata = list(bearer_metadata(token))
    if user.isprintable() and user:
        metadata.append((ACTOR_METADATA, f"cli:{user}"[:64]))
    with grpc.insecure_channel(target) as channel:
        stub: Any = authz_pb2_grpc.AuthzServiceStub(channel)
        try:
            reply = getattr(stub, method)(request, metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            print(f"{PROG}: {code}: {details}", file=sys.stderr)
            return 1
    print(MessageToJson(reply, preserving_proto_field_name=True, indent=2))
    if method in SECRET_CALLS:
        print("The secret above is shown only this once: store it now.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
