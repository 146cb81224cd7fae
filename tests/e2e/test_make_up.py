"""`make up`'s program: brings the stack up, serves a request, and Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from llmproxy.authz.settings import HMAC_SECRET_ENV
from llmproxy.common.settings import ControlSettings
from llmproxy.config import StackConfig
from llmproxy.devstack.__main__ import banner, control_example, token_command
from llmproxy.devstack.monitoring import find_binaries
from llmproxy.devstack.stack import Stack
from tests.harness.configs import stack_config_data, write_config


def processes_mentioning(text: str) -> list[str]:
    listing = subprocess.run(
        ["ps", "-ww", "-eo", "pid,args"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in listing.splitlines() if text in line and "ps -ww" not in line]


def pasted(banner: str, commands: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """commands run by bash after the banner's `export` lines, as a user would paste them."""
    exports = [line.strip() for line in banner.splitlines() if line.startswith("  export ")]
    assert exports, banner
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + "\n".join([*exports, commands])],
        cwd=Path(__file__).resolve().parents[2],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def the_banners_commands_work_as_pasted(
    text: str, config: StackConfig, environ: dict[str, str]
) -> None:
    """The banner's exports, its control call and its operator-token command, run as pasted."""
    assert control_example(config) in text
    assert token_command(config) in text
    done = pasted(
        text,
        'curl -sf http://$LLMPROXY_API/v1/models -H "authorization: Bearer $LLMPROXY_KEY"\n'
        '$GRPCURL -H "authorization: Bearer $LLMPROXY_ADMIN_TOKEN" $LLMPROXY_CONTROL '
        "llmproxy.health.v1.ProviderHealthService/ListProviders\n"
        f"{control_example(config)}\n"
        ".venv/bin/python -m llmproxy.authz.cli --target $LLMPROXY_CONTROL list --tenant demo\n"
        f"OPERATOR=$({token_command(config)} | grep -o 'ct-llmp-[A-Za-z0-9_-]*')\n"
        '$GRPCURL -H "authorization: Bearer $OPERATOR" -d \'{"name": "demo"}\' '
        "$LLMPROXY_CONTROL llmproxy.health.v1.ProviderHealthService/ProbeNow",
        {**environ, "USER": "e2e"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"id": "text-embedding-3-small"' in done.stdout
    assert '"name": "demo"' in done.stdout
    assert '"targets"' in done.stdout  # ListModels
    assert '"tenant": "demo"' in done.stdout
    assert '"result"' in done.stdout  # ProbeNow, as an operator


# Secrets `make up` makes when the user sets none.
CONTROL = ControlSettings()
GENERATED = (HMAC_SECRET_ENV, CONTROL.admin_token_env, CONTROL.service_token_env)


def test_up_serves_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    path, config = write_config(tmp_path, stack_config_data())
    workdir = tmp_path / "run"
    # Without the authz secrets: `make up` makes random ones and says so.
    environ = {k: v for k, v in os.environ.items() if k not in GENERATED}
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmproxy.devstack",
            "up",
            "--config",
            str(path),
            "--workdir",
            str(workdir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environ,
    )
    assert up.stdout is not None
    banner: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            banner.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        text = "".join(banner)
        assert "llmproxy is up" in text, text
        assert "curl -s" in text
        if find_binaries():
            prometheus = re.search(r"Prometheus +(http://127.0.0.1:\d+)", text)
            assert prometheus, text
            assert httpx.get(f"{prometheus.group(1)}/-/ready", timeout=5).status_code == 200
            # Where the state lives, and that it survives a restart.
            assert f"(durable: append-only file in {workdir / 'redis'})" in text
            assert "(not persisted; evicts cache entries only)" in text
            # Demo mode: alerts go to a local receiver's log, and the banner says where.
            assert f"Alerts go to    {workdir / 'logs' / 'alerts.log'}" in text
        assert f"random for this run: ${CONTROL.admin_token_env} unset" in text
        key = re.search(r"authorization: Bearer (sk-llmp-[\w-]+)'", text)
        assert key, text
        envoy = config.envoy
        answer = httpx.post(
            f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]},
            headers={"authorization": f"Bearer {key.group(1)}"},
            timeout=10,
        )
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"] == (
            "This is a fake answer to: Hello!"
        )
        assert processes_mentioning(str(tmp_path))  # the children run while the stack is up
        the_banners_commands_work_as_pasted(text, config, environ)
    finally:
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=60)
    assert up.returncode == 0, "".join(banner) + rest
    assert "stopped." in rest
    assert processes_mentioning(str(tmp_path)) == []
    assert (workdir / "envoy.yaml").exists()
    # Prometheus and Alertmanager too, where Debian's packages are installed.
    monitoring = {"prometheus.log", "alertmanager.log", "alerts.log"} if find_binaries() else set()
    assert {p.name for p in (workdir / "logs").iterdir()} == {
        "redis.log",
        "redis-cache.log",
        "fakeprovider.log",
        "router.log",
        "ratelimit.log",
        "authz.log",
        "health.log",
        "fault.log",
        "envoy.log",
        *monitoring,
    }


async def test_a_running_redis_is_used_not_started_again(
    tmp_path: Path, redis_process: str
) -> None:
    data = stack_config_data()
    data["redis"]["url"] = redis_process
    path, config = write_config(tmp_path, data)
    stack = Stack(config, path, tmp_path / "run", os.environ)
    await stack.start()
    try:
        assert "redis" not in stack.processes
        assert set(stack.processes) >= {"router", "envoy", "fakeprovider"}
        assert "already running, not started; persists with an append-only file" in banner(stack)
        text = banner(stack, modes=await stack.service_modes())
        assert "router (normal), ratelimit (normal), authz (normal), health (normal)" in text
    finally:
        stack.stop()
