"""What our xDS servers (health's EDS, fault's RTDS) share: reading Envoy's request stream.

A state-of-the-world xDS stream is bidirectional and either side may speak first: the server
answers requests (subscriptions, ACKs, NACKs) and pushes on its own changes. Reading requests
into a queue lets the server wait on both at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any


async def pump_requests(requests: AsyncIterator[Any], into: asyncio.Queue[Any]) -> None:
    """Put every request of the stream into `into`, then None once the client closed it."""
    try:
        async for request in requests:
            await into.put(request)
    finally:
        await into.put(None)  # the client closed its side (or the stream broke)
