"""The shell variables `make up` prints, which every example in README.md and docs/ uses.

One definition for the banner and for the test that runs the documented commands, so the
names the docs use and the values a running stack has cannot part.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from llmproxy.devstack.stack import Stack

ADDRESSES = ("LLMPROXY_API", "LLMPROXY_CONTROL", "LLMPROXY_ENVOY_ADMIN", "LLMPROXY_HEALTH")


def grpcurl_command(protoset: Path) -> str:
    """grpcurl (from the venv when it is there) with llmproxy's descriptor set, in plaintext."""
    beside_python = Path(sys.executable).parent / "grpcurl"
    binary = str(beside_python) if beside_python.exists() else "grpcurl"
    return f"{binary} -plaintext -protoset {protoset}"


def shell_exports(stack: Stack, api_key: str) -> dict[str, str]:
    """The variables by name: addresses, the demo API key, a generated admin token, $GRPCURL.

    The admin token is included only when `make up` made it: a token the user set is already
    in their environment, and is not printed.
    """
    config = stack.config
    envoy = config.envoy
    health = config.services.health
    exports = {
        "LLMPROXY_API": f"{envoy.host}:{envoy.listener_port}",
        "LLMPROXY_CONTROL": f"{envoy.host}:{envoy.control_port}",
        "LLMPROXY_ENVOY_ADMIN": f"{envoy.host}:{envoy.admin_port}",
        "LLMPROXY_HEALTH": f"{health.host}:{health.grpc_port}",
        "LLMPROXY_KEY": api_key,
    }
    token_env = config.control.admin_token_env
    if token_env in stack.generated_secrets:
        exports[token_env] = stack.environ[token_env]
    exports["GRPCURL"] = grpcurl_command(stack.protoset_path)
    return exports


def export_lines(exports: dict[str, str]) -> list[str]:
    """`export` lines to paste into a shell: addresses, then secrets, then $GRPCURL."""
    groups = [
        [n for n in exports if n in ADDRESSES],
        [n for n in exports if n not in ADDRESSES and n != "GRPCURL"],
        [n for n in exports if n == "GRPCURL"],
    ]
    return [
        "export " + " ".join(f"{name}={shlex.quote(exports[name])}" for name in group)
        for group in groups
        if group
    ]
