"""`python -m llmproxy.devstack up`: run the whole stack in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from llmproxy.common.contract import SERVICES
from llmproxy.common.errors import exit_on_config_error
from llmproxy.config import StackConfig, config_path, load_config
from llmproxy.devstack.authz import create_demo_key
from llmproxy.devstack.exports import export_lines, shell_exports
from llmproxy.devstack.monitoring import ALERT_LOG, monitoring_processes, monitoring_urls
from llmproxy.devstack.process import StartupError
from llmproxy.devstack.stack import Stack


def token_command(config: StackConfig) -> str:
    """The command that makes an operator's control token, as the banner prints it."""
    envoy = config.envoy
    return (
        f".venv/bin/python -m llmproxy.authz.cli --target {envoy.host}:{envoy.control_port} "
        "tokens create --role operator --name $USER"
    )


def _secrets_note(stack: Stack) -> str:
    authz = stack.config.services.authz
    admin_env = stack.config.control.admin_token_env
    if admin_env in stack.generated_secrets:
        token = stack.environ[admin_env]
        lines = [f"  Admin token     {token}   (random for this run: ${admin_env} unset)"]
    else:
        lines = [f"  Admin token     ${admin_env}"]
    lines.append(f"  Operator token  {token_command(stack.config)}   (docs/security.md)")
    if authz.hmac_secret_env in stack.generated_secrets:
        lines.append(
            f"  Key hashing     random secret for this run (${authz.hmac_secret_env} unset): "
            "keys created now stop working when it stops"
        )
    return "\n".join(lines)


def _monitoring_note(stack: Stack) -> str:
    urls = monitoring_urls(stack.monitoring)
    if not urls:
        return "  Monitoring      off (apt-get install prometheus prometheus-alertmanager)\n"
    if any(p.name == "alerts" for p in stack.monitoring):
        alerts = f"{stack.workdir / 'logs' / ALERT_LOG}   (demo mode: no pager or Slack)"
    else:
        alerts = "as deploy/alertmanager/alertmanager.yml routes them"
    return (
        f"  Prometheus      {urls['prometheus']}   (alert rules: deploy/prometheus/rules)\n"
        f"  Alertmanager    {urls['alertmanager']}\n"
        f"  Alerts go to    {alerts}\n"
    )


def control_example(config: StackConfig) -> str:
    """A control call with the variables the banner exports: every control call needs a token."""
    admin_env = config.control.admin_token_env
    return (
        f'$GRPCURL -H "authorization: Bearer ${admin_env}" $LLMPROXY_CONTROL '
        "llmproxy.router.v1.RouterService/ListModels"
    )


def _exports_note(stack: Stack, api_key: str | None) -> str:
    if api_key is None:
        return ""
    lines = export_lines(shell_exports(stack, api_key))
    header = "\nFor the examples in README.md and docs/, paste into your shell:\n"
    example = f"then, for instance:\n  {control_example(stack.config)}\n"
    return header + "".join(f"  {line}\n" for line in lines) + example


def _persistence_warning(persistence: str | None) -> str:
    # A Redis someone else started (Debian's service on 6379, say) keeps its own settings.
    if persistence == "append-only file":
        return "; persists with an append-only file"
    if persistence == "snapshots":
        return "; WARNING: snapshots only, a crash loses the writes since the last one"
    if persistence == "nothing":
        return "; WARNING: persists nothing, a restart loses every API key"
    return ""


def _redis_note(stack: Stack) -> str:
    # Where the state lives and whether it survives: what an operator asks first in an outage.
    config = stack.config
    if "redis" in stack.processes:
        state = f"durable: append-only file in {stack.workdir / 'redis'}"
    elif "redis-primary" in stack.processes:
        state = "Sentinel: a primary, a replica and three sentinels, durable"
    else:
        state = "already running, not started" + _persistence_warning(
            stack.reused_redis_persistence
        )
    lines = [f"  Redis           {config.redis.url}   ({state})"]
    cache = config.cache_redis_url
    if cache is not None:
        started = "not persisted" if "redis-cache" in stack.processes else "already running"
        lines.append(f"  Cache Redis     {cache}   ({started}; evicts cache entries only)")
    return "".join(f"{line}\n" for line in lines)


def _services_note(stack: Stack, modes: dict[str, str]) -> str:
    # How many of each run, and whether each is on Redis or on its fallback without it.
    services = stack.config.services
    parts = [
        f"{name}"
        + (f" x{count}" if (count := getattr(services, name).instances) > 1 else "")
        + f" ({modes.get(name, 'unknown')})"
        for name in SERVICES
    ]
    return f"  Services        {', '.join(parts)}\n"


def banner(stack: Stack, api_key: str | None = None, modes: dict[str, str] | None = None) -> str:
    """What a user needs once the stack is up: endpoints, keys, logs and a request to paste."""
    config: StackConfig = stack.config
    envoy = config.envoy
    base = f"http://{envoy.host}:{envoy.listener_port}"
    model = config.models[0].name if config.models else "MODEL"
    mode = (
        "demo (fake provider; set a provider key to go live)"
        if config.demo_mode(stack.environ)
        else "live providers"
    )
    key = api_key or "$LLMPROXY_API_KEY"
    state = _services_note(stack, modes or {}) + _redis_note(stack) + _monitoring_note(stack)
    return f"""
llmproxy is up ({mode}).
  OpenAI API      {base}/v1   (Envoy)
  Control gRPC    {envoy.host}:{envoy.control_port}   protoset {stack.protoset_path}
  Envoy admin     http://{envoy.host}:{envoy.admin_port}
{state}  Logs            {stack.workdir / "logs"}
  API key         {key}   (tenant demo, expires in 24 h)
{_secrets_note(stack)}

Try it:
  curl -s {base}/v1/chat/completions -H 'content-type: application/json' \\
    -H 'authorization: Bearer {key}' \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'
{_exports_note(stack, api_key)}
Press Ctrl-C to stop everything.
"""


async def run(stack: Stack) -> None:
    """Start the stack, print the banner, wait for SIGINT or SIGTERM, stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stack.start()
        token = stack.environ[stack.config.control.admin_token_env]
        key = await create_demo_key(stack.config, token)
        print(banner(stack, key, await stack.service_modes()), flush=True)
        await stop.wait()
        print("stopping...", flush=True)
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m llmproxy.devstack", description=__doc__)
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--config", help="configuration file (default: $LLMPROXY_CONFIG)")
    parser.add_argument("--workdir", type=Path, default=Path(".run"), help="logs and state")
    args = parser.parse_args()
    path = config_path(os.environ, args.config)
    with exit_on_config_error("llmproxy"):
        config = load_config(path, os.environ)
        stack = Stack(config, path.resolve(), args.workdir.resolve(), os.environ)
        stack.monitoring = monitoring_processes(
            config, stack.workdir, alert_log=config.demo_mode(stack.environ)
        )
        try:
            asyncio.run(run(stack))
        except StartupError as exc:
            print(f"llmproxy: {exc}", file=sys.stderr)
            raise SystemExit(2) from exc
    print("stopped.")


if __name__ == "__main__":
    main()
