"""Waiting for a benchmark's own servers to listen."""

from __future__ import annotations

import contextlib
import socket
import time


def wait_port(port: int, timeout_s: float = 30) -> None:
    """Return once something listens on 127.0.0.1:port; RuntimeError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")
