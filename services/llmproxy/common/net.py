"""Small network facts every side needs: whether a host is an IP literal, a free local port."""

from __future__ import annotations

import contextlib
import ipaddress
import socket

_handed_out: set[int] = set()


def is_ip(host: str) -> bool:
    """Whether host is an IPv4 or IPv6 literal (no DNS lookup needed)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and not handed out before by this process.

    For servers that cannot bind port 0 and report it back (Envoy, Redis): the launcher, the
    tests and the benchmarks pick their ports with it.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def free_port_block(count: int) -> int:
    """A port p with p .. p+count-1 all free now, for servers that take consecutive ports
    (ratelimit instances, a Sentinel topology and its data nodes)."""
    while True:
        base = free_port()
        if base + count > 65536:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    taken = stack.enter_context(socket.socket())
                    taken.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.update(range(base, base + count))
        return base
