"""`python -m llmproxy.devstack.alertlog --port N`: where `make up`'s alerts go in demo mode.

A webhook receiver on 127.0.0.1:N standing in for the pager and Slack of
deploy/alertmanager/alertmanager.yml. It prints one line per alert it is sent to its stdout,
which `make up` keeps as .run/logs/alerts.log, so a local stack shows where its alerts went
instead of failing to reach a Slack it has no secret for. GET /healthz answers 200.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _webhook_lines(receiver: str, body: dict[str, Any]) -> list[str]:
    lines = []
    for alert in body.get("alerts", []):
        labels = dict(alert.get("labels", {}))
        name = labels.pop("alertname", "?")
        shown = " ".join(f"{key}={value}" for key, value in sorted(labels.items()))
        summary = alert.get("annotations", {}).get("summary", "")
        lines.append(f"{receiver} {alert.get('status', '?')} {name} {shown}: {summary}")
    return lines


def _slack_lines(body: dict[str, Any]) -> list[str]:
    return [
        f"slack {attachment.get('title', '')}: "
        + " | ".join(str(attachment.get("text", "")).splitlines())
        for attachment in body.get("attachments", [])
    ]


def notification_lines(path: str, body: object) -> list[str]:
    """What one notification says, a line per alert, without the time.

    Alertmanager posts its webhook payload (`alerts`, each with status, labels and annotations)
    to the pager's path, and Slack's payload (`attachments` with title and text) to Slack's.
    """
    receiver = path.strip("/") or "webhook"
    if isinstance(body, dict) and "alerts" in body:
        return _webhook_lines(receiver, body)
    if isinstance(body, dict) and "attachments" in body:
        return _slack_lines(body)
    return [f"{receiver} {json.dumps(body, sort_keys=True)}"]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer(200 if self.path == "/healthz" else 404)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length)
        try:
            body: object = json.loads(raw or b"{}")
        except ValueError:
            body = raw.decode(errors="replace")
        for line in notification_lines(self.path, body):
            print(f"{_now()} {line}", flush=True)
        self._answer(200)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass  # the log holds alerts only, not one access line per POST


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m llmproxy.devstack.alertlog", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    with ThreadingHTTPServer((args.host, args.port), _Handler) as server:
        print(f"{_now()} receiving alerts on http://{args.host}:{args.port}", flush=True)
        try:
            server.serve_forever()
        except (SystemExit, KeyboardInterrupt):
            sys.stdout.flush()


if __name__ == "__main__":
    main()
