"""Real Prometheus and Alertmanager for a test stack, and a webhook receiver standing in for
the pager and Slack.

Both are built as `make up` builds them (llmproxy.devstack.monitoring): Prometheus gets the
stack's scrape config and the committed rule files, here with 1 s intervals; Alertmanager gets
the committed alertmanager.yml with only its timings shortened and its receivers' URLs pointed
at the local receiver, so the routes, grouping and inhibitions under test are the shipped ones.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from llmproxy.common.net import free_port
from llmproxy.config import StackConfig
from llmproxy.devstack.monitoring import (
    alertmanager_process,
    find_binaries,
    local_alertmanager_config,
    prometheus_process,
)
from llmproxy.devstack.process import ManagedProcess

PAGER_TOKEN = "test-pager-token"  # noqa: S105 - a made-up token the receiver checks for


@dataclass(frozen=True)
class Notification:
    """One POST the receiver got: which path (receiver), when, its headers and JSON body."""

    path: str
    received: float  # time.monotonic()
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    """Collects the notifications Alertmanager sends; thread-safe."""

    url: str
    notifications: list[Notification] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, path: str) -> list[Notification]:
        """The notifications POSTed to path so far."""
        with self.lock:
            return [n for n in self.notifications if n.path == path]


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            notification = Notification(
                self.path, time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body
            )
            with receiver.lock:
                receiver.notifications.append(notification)
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            pass  # keep the test output to what matters

    return Handler


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """An HTTP server on a free loopback port recording every POST, for the test's duration."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    receiver = WebhookReceiver(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(receiver)
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def alertmanager_test_config(receiver_url: str, secrets_dir: Path) -> dict[str, Any]:
    """The committed alertmanager.yml, with second-scale timings and the receiver's URLs."""
    config = local_alertmanager_config(receiver_url, secrets_dir)

    def fast(route: dict[str, Any]) -> None:
        for key, value in (("group_wait", "1s"), ("group_interval", "2s")):
            if key in route or route is config["route"]:
                route[key] = value
        for child in route.get("routes", []):
            fast(child)

    fast(config["route"])
    (secrets_dir / "pager_token").write_text(PAGER_TOKEN)
    return config


@dataclass(frozen=True)
class Monitoring:
    """Running Prometheus and Alertmanager, and their URLs."""

    prometheus: ManagedProcess
    alertmanager: ManagedProcess
    prometheus_url: str
    alertmanager_url: str


def monitoring_for(config: StackConfig, workdir: Path, receiver_url: str) -> Monitoring:
    """Alertmanager and Prometheus (1 s scrapes and evaluations) for config's stack, not started."""
    binaries = find_binaries()
    if binaries is None:
        raise FileNotFoundError(
            "prometheus and alertmanager are not installed: "
            "apt-get install -y prometheus prometheus-alertmanager"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    am_config = workdir / "alertmanager.yml"
    am_config.write_text(
        yaml.safe_dump(alertmanager_test_config(receiver_url, workdir / "secrets"))
    )
    am_port, prom_port = free_port(), free_port()
    alertmanager = alertmanager_process(
        binaries.alertmanager,
        am_config,
        workdir=workdir,
        port=am_port,
        log_path=workdir / "alertmanager.log",
    )
    prometheus = prometheus_process(
        binaries.prometheus,
        config,
        workdir=workdir / "prometheus",
        port=prom_port,
        alertmanager_port=am_port,
        log_path=workdir / "prometheus.log",
        interval_s=1,
        # Firing alerts are re-sent every minute by default; the test wants them at once.
        extra_args=["--rules.alert.resend-delay=1s"],
    )
    return Monitoring(
        prometheus, alertmanager, f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}"
    )


async def start_monitoring(monitoring: Monitoring, timeout_s: float = 30.0) -> None:
    """Start Alertmanager, then Prometheus, and wait until both are ready (or stop both)."""
    monitoring.alertmanager.start()
    try:
        await monitoring.alertmanager.wait_ready(timeout_s)
        monitoring.prometheus.start()
        await monitoring.prometheus.wait_ready(timeout_s)
    except BaseException:
        monitoring.prometheus.stop()
        monitoring.alertmanager.stop()
        raise
