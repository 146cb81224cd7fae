"""Prometheus and Alertmanager as stack components, when Debian's packages are installed.

`make up` adds them after Envoy (the test suite's stacks do not: they would pay for two more
processes); the alerting tests start them with their own timings through the same builders.
In demo mode `make up` also runs a local alert receiver (`alertlog`) and points Alertmanager's
receivers at it, as a local stack has no pager or Slack to reach.
"""

from __future__ import annotations

import shutil
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from llmproxy.common.net import free_port
from llmproxy.config import StackConfig
from llmproxy.devstack.probes import http_ok
from llmproxy.devstack.process import ManagedProcess
from llmproxy.obsconf.prometheus import RULES_DIR, PrometheusOptions, build_prometheus_config

ALERTMANAGER_CONFIG = RULES_DIR.parents[1] / "alertmanager" / "alertmanager.yml"
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
STANDARD_LISTENER_PORT = 8080
ALERT_LOG = "alerts.log"
LOCAL_PAGER_TOKEN = "local"  # noqa: S105 - the local receiver checks no token


@dataclass(frozen=True)
class Binaries:
    """Where the prometheus and alertmanager binaries are."""

    prometheus: str
    alertmanager: str


def find_binaries() -> Binaries | None:
    """The installed binaries (Debian names alertmanager prometheus-alertmanager), or None."""
    prometheus = shutil.which("prometheus")
    alertmanager = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if prometheus is None or alertmanager is None:
        return None
    return Binaries(prometheus, alertmanager)


def port_or_free(preferred: int, host: str = "127.0.0.1") -> int:
    """preferred if nothing listens there (Debian's packages may run their own), else a free one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, preferred))
        except OSError:
            return free_port()
    return preferred


def alertmanager_process(
    binary: str, config_file: Path, *, workdir: Path, port: int, log_path: Path
) -> ManagedProcess:
    """A single, unclustered Alertmanager on 127.0.0.1:port."""
    argv = [
        binary,
        f"--config.file={config_file}",
        f"--storage.path={workdir / 'alertmanager'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no gossip: one instance, one port
    ]
    ready = partial(http_ok, f"http://127.0.0.1:{port}/-/ready")
    return ManagedProcess("alertmanager", argv, log_path, ready)


def prometheus_process(
    binary: str,
    config: StackConfig,
    *,
    workdir: Path,
    port: int,
    alertmanager_port: int,
    log_path: Path,
    interval_s: float = 15.0,
    extra_args: Sequence[str] = (),
) -> ManagedProcess:
    """Prometheus scraping config's stack with the committed alert rules, on 127.0.0.1:port."""
    workdir.mkdir(parents=True, exist_ok=True)
    options = PrometheusOptions(
        scrape_interval_s=interval_s,
        evaluation_interval_s=interval_s,
        rule_files=[str(path) for path in sorted(RULES_DIR.glob("*.yml"))],
        alertmanagers=[f"127.0.0.1:{alertmanager_port}"],
    )
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(build_prometheus_config(config, options)))
    argv = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        *extra_args,
    ]
    ready = partial(http_ok, f"http://127.0.0.1:{port}/-/ready")
    return ManagedProcess("prometheus", argv, log_path, ready)


def local_alertmanager_config(receiver_url: str, secrets_dir: Path) -> dict[str, Any]:
    """The committed alertmanager.yml with every receiver delivering to receiver_url.

    Routes, grouping and inhibitions stay as shipped; the pager's webhook posts to
    `<receiver_url>/pager` and Slack's to `<receiver_url>/slack`, their secret files written
    into secrets_dir.
    """
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    secrets_dir.mkdir(parents=True, exist_ok=True)
    pager_token = secrets_dir / "pager_token"
    pager_token.write_text(LOCAL_PAGER_TOKEN)
    slack_url = secrets_dir / "slack_api_url"
    slack_url.write_text(f"{receiver_url}/slack")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{receiver_url}/{receiver['name']}"
            hook["http_config"]["authorization"]["credentials_file"] = str(pager_token)
        for slack in receiver.get("slack_configs", []):
            slack["api_url_file"] = str(slack_url)
    return config


def alert_log_process(port: int, log_path: Path) -> ManagedProcess:
    """The local alert receiver on 127.0.0.1:port; each alert is a line of log_path."""
    argv = [sys.executable, "-m", "llmproxy.devstack.alertlog", "--port", str(port)]
    ready = partial(http_ok, f"http://127.0.0.1:{port}/healthz")
    return ManagedProcess("alerts", argv, log_path, ready)


def monitoring_processes(
    config: StackConfig, workdir: Path, *, alert_log: bool = False
) -> list[ManagedProcess]:
    """Alertmanager then Prometheus for `make up`, or none when they are not installed.

    With alert_log (demo mode), the local alert receiver first, and Alertmanager delivering
    to it: alerts then end up in workdir/logs/alerts.log.
    """
    binaries = find_binaries()
    if binaries is None:
        return []
    # The usual ports for a stack on the usual ports; free ones for any other (the tests, a
    # second stack), which must not collide with the first.
    usual = config.envoy.listener_port == STANDARD_LISTENER_PORT
    alertmanager_port = port_or_free(ALERTMANAGER_PORT) if usual else free_port()
    prometheus_port = port_or_free(PROMETHEUS_PORT) if usual else free_port()
    logs = workdir / "logs"
    receivers: list[ManagedProcess] = []
    alertmanager_config = ALERTMANAGER_CONFIG
    if alert_log:
        receiver_port = free_port()
        receivers.append(alert_log_process(receiver_port, logs / ALERT_LOG))
        alertmanager_config = workdir / "alertmanager" / "alertmanager.yml"
        local = local_alertmanager_config(
            f"http://127.0.0.1:{receiver_port}", alertmanager_config.parent / "secrets"
        )
        alertmanager_config.write_text(yaml.safe_dump(local))
    return [
        *receivers,
        alertmanager_process(
            binaries.alertmanager,
            alertmanager_config,
            workdir=workdir,
            port=alertmanager_port,
            log_path=logs / "alertmanager.log",
        ),
        prometheus_process(
            binaries.prometheus,
            config,
            workdir=workdir / "prometheus",
            port=prometheus_port,
            alertmanager_port=alertmanager_port,
            log_path=logs / "prometheus.log",
        ),
    ]


def monitoring_urls(processes: Sequence[ManagedProcess]) -> dict[str, str]:
    """Each monitoring process's web UI, by name, read back from its listen address."""
    urls = {}
    for process in processes:
        for arg in process.argv:
            if arg.startswith("--web.listen-address="):
                urls[process.name] = "http://" + arg.split("=", 1)[1]
    return urls
