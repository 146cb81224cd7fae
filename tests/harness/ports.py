"""Free loopback ports for servers that cannot bind port 0 themselves (Envoy, Redis)."""

from __future__ import annotations

import socket

from llmproxy.common.net import free_port

__all__ = ["free_port", "free_port_with_room"]


def free_port_with_room(step: int) -> int:
    """A free port whose neighbour step above is free too: instance 1 of a service listens there.

    The rate limiter's instance i listens on its configured port + i * port_step.
    """
    while True:
        port = free_port()
        try:
            with socket.create_server(("127.0.0.1", port + step)):
                return port
        except OSError:
            continue
