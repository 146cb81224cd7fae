"""A lean pipelined connection to a standalone Redis, for the limiter's script calls only.

redis-py spends more Python on each command than the command itself costs here (connection
pool, retry wrapper, stream reader, parser glue). The limiter sends one script call per batch,
thousands a second, so those calls go through this instead: one asyncio Protocol, commands
written as RESP by hand, replies parsed by hiredis and handed to the callers in the order they
were sent. A caller that gave up (timeout) just leaves its reply unread. Everything else (PING,
SCRIPT LOAD, DEL, Redis Cluster, TLS, unix sockets) stays on redis-py.

Errors: OSError (ConnectionError) when Redis cannot be reached or the connection drops, and
ReplyError (an error answer) or ProtocolError from hiredis; the store turns them into
StoreError.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any

import hiredis

ReplyError = hiredis.ReplyError


def pack(args: Sequence[bytes]) -> bytes:
    """One command as RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiters = self.waiters
        try:
            while (reply := self._reader.gets()) is not False:
                future = waiters.popleft()
                if not future.done():  # a caller that timed out left its reply unread
                    future.set_result(reply)
        except hiredis.ProtocolError as exc:
            self._fail(ConnectionError(f"redis: unreadable reply: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"redis: connection lost: {exc or 'closed by the server'}"))

    def _fail(self, error: Exception) -> None:
        self.lost = True
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_exception(error)


class ScriptConnection:
    """Commands pipelined on one connection, opened on first use and again after a loss."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 1.0,
    ) -> None:
        self._address = (host, port)
        self._setup: list[bytes] = []
        if password:
            self._setup.append(
                pack([b"AUTH", *([username.encode()] if username else []), password.encode()])
            )
        if db:
            self._setup.append(pack([b"SELECT", str(db).encode()]))
        self._connect_timeout_s = connect_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting = asyncio.Lock()

    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.lost:
            return protocol
        async with self._connecting:
            protocol = self._protocol
            if protocol is None or protocol.lost:
                protocol = await self._connect()
                self._protocol = protocol
        return protocol

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout_s):
            _, protocol = await loop.create_connection(_Protocol, *self._address)
            if self._setup:
                replies = [self._send(protocol, command) for command in self._setup]
                for reply in replies:
                    answer = await reply
                    if isinstance(answer, ReplyError):
                        protocol.transport.abort()  # type: ignore[union-attr]
                        raise answer
        return protocol

    @staticmethod
    def _send(protocol: _Protocol, command: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        protocol.waiters.append(future)
        protocol.transport.write(command)  # type: ignore[union-attr]  # set on connection
        return future

    async def call(self, args: Sequence[bytes]) -> Any:
        """The reply to one command; an error reply is raised as ReplyError."""
        protocol = await self._connected()
        reply = await self._send(protocol, pack(args))
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def close(self) -> None:
        """Drop the connection (callers waiting get ConnectionError); the next call reopens."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
