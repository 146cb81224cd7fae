"""Provider addresses for Envoy's endpoints: EDS carries IP addresses, never host names.

Envoy does not resolve the addresses of EDS endpoints, so the health service does: each
provider's host is resolved at startup and every dns_refresh_s, IPv4 preferred (as the clusters
used to be configured), and a failed lookup keeps the previous addresses.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from llmproxy.common.net import is_ip
from llmproxy.common.settings import ProviderSettings

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT_S = 2.0

Lookup = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True)
class Target:
    """Where a provider listens: its host name (for Host and SNI), port and addresses."""

    host: str
    port: int
    addresses: tuple[str, ...]


def host_and_port(provider: ProviderSettings) -> tuple[str, int]:
    """The host and port of provider's base URL."""
    url = urlsplit(provider.base_url)
    return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


async def system_lookup(host: str, port: int) -> list[str]:
    """The addresses of host, IPv4 first, through the system resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    v4 = [str(info[4][0]) for info in infos if info[0] == socket.AF_INET]
    v6 = [str(info[4][0]) for info in infos if info[0] == socket.AF_INET6]
    return sorted(set(v4)) or sorted(set(v6))


async def resolve(
    provider: ProviderSettings, previous: Target | None, lookup: Lookup = system_lookup
) -> Target:
    """provider's target now; on a failed lookup, previous (or no addresses)."""
    host, port = host_and_port(provider)
    if is_ip(host):
        return Target(host, port, (host,))
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_S):
            addresses = tuple(await lookup(host, port))
    except (OSError, TimeoutError) as exc:
        extra = {"provider": provider.name, "host": host, "why": str(exc)}
        log.warning("provider host not resolved", extra=extra)
        return previous or Target(host, port, ())
    return Target(host, port, addresses)
