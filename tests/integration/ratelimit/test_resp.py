"""The lean script connection on a real redis-server: replies in order, errors, db, losses."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from llmproxy.ratelimit.resp import ReplyError, ScriptConnection, pack
from tests.harness.waiting import eventually


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def test_commands_are_written_as_resp_arrays() -> None:
    assert pack([b"GET", b"k"]) == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"


async def test_pipelined_calls_get_their_own_replies_in_the_selected_db(
    redis_process: str, redis_client: aioredis.Redis
) -> None:
    host, port = address(redis_process)
    other_db = aioredis.Redis(host=host, port=port, db=3)
    await other_db.flushdb()
    connection = ScriptConnection(host, port, db=3)
    try:
        replies = await asyncio.gather(
            *(connection.call([b"INCRBY", b"rl-test", b"%d" % n]) for n in range(1, 51))
        )
        # Sent in order on one connection, answered in order: running sums 1, 3, 6, ...
        assert replies == [n * (n + 1) // 2 for n in range(1, 51)]
        assert await other_db.get("rl-test") == b"1275"
        assert await redis_client.get("rl-test") is None  # db 0 untouched
    finally:
        connection.close()
        await other_db.aclose()


async def test_an_error_reply_is_raised_and_the_connection_stays_usable(
    redis_process: str, redis_client: aioredis.Redis
) -> None:
    connection = ScriptConnection(*address(redis_process))
    try:
        with pytest.raises(ReplyError, match="NOSCRIPT"):
            await connection.call([b"EVALSHA", b"0" * 40, b"0"])
        assert await connection.call([b"ECHO", b"still here"]) == b"still here"
    finally:
        connection.close()


async def test_an_unreachable_redis_is_an_os_error_and_a_dropped_one_fails_waiters(
    redis_process: str, redis_client: aioredis.Redis
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(OSError, match=r"(?i)refused|connect"):
        await ScriptConnection("127.0.0.1", closed_port).call([b"PING"])

    connection = ScriptConnection(*address(redis_process))
    waiting = asyncio.ensure_future(connection.call([b"BLPOP", b"rl-never", b"5"]))
    await eventually(
        redis_client.client_list,
        lambda clients: any(c.get("cmd") == "blpop" for c in clients),
        what="a client blocked in BLPOP",
    )
    connection.close()
    with pytest.raises(ConnectionError, match="connection lost"):
        await waiting
    # The next call opens a new connection.
    assert await connection.call([b"PING"]) == b"PONG"
    connection.close()
