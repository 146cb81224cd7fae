"""`python -m llmproxy.router.warm FILE`: warm the cache from a JSONL file of requests.

Each line is an OpenAI request body (chat by default; `"endpoint": "embeddings"` for
embeddings). Lines go to the router's WarmCache RPC in batches, through Envoy's control
listener by default, as the operator whose control token is in $LLMPROXY_TOKEN (or with the
admin token, $LLMPROXY_ADMIN_TOKEN); a summary and any failed lines are printed. Exit status:
0, 1 when a line or a call failed, 2 when the file or the token is missing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc

from llmproxy._gen.router.v1 import router_pb2, router_pb2_grpc
from llmproxy.common.credentials import CredentialError, bearer_metadata, cli_token
from llmproxy.common.settings import ControlSettings

BATCH_LINES = 500


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m llmproxy.router.warm", description=__doc__)
    parser.add_argument("file", type=Path, help="JSONL file, one request body per line")
    parser.add_argument("--target", default="127.0.0.1:8081", help="router or control listener")
    parser.add_argument(
        "--tenant",
        default="",
        help="whose cache to warm (required when cache.scope is tenant, the default)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per batch")
    args = parser.parse_args()
    try:
        token = cli_token(os.environ, ControlSettings().admin_token_env)
    except CredentialError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    try:
        lines = args.file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        # A usage error, not a crash: say which file and why, as argparse would.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        parser.exit(2, f"{parser.prog}: cannot read {args.file}: {reason}\n")
    cached = already = 0
    failures: list[str] = []
    with grpc.insecure_channel(args.target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        for start in range(0, len(lines), BATCH_LINES):
            batch = "\n".join(lines[start : start + BATCH_LINES])
            try:
                reply = stub.WarmCache(
                    router_pb2.WarmCacheRequest(jsonl=batch, tenant=args.tenant),
                    timeout=args.timeout,
                    metadata=bearer_metadata(token),
                )
            except grpc.RpcError as exc:
                print(f"warming failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
                raise SystemExit(1) from exc
            cached += reply.cached
            already += reply.already_cached
            failures += [f"line {start + f.line}: {f.reason}" for f in reply.failures]
    print(f"cached {cached}, already cached {already}, failed {len(failures)}")
    for failure in failures:
        print(failure, file=sys.stderr)
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
