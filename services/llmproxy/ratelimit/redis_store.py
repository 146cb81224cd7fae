"""LimitStore on Redis (standalone or Cluster): one EVALSHA decides a whole batch.

Standalone Redis gets one script call per batch, whatever its keys, over a lean pipelined
connection of its own (resp.py: redis-py's per-command Python would cost more than the rest of
a batch). On a Redis Cluster a script may only touch one slot, so a batch is split by slot
(every counter's keys share a hash tag) and the calls run concurrently, through redis-py.
Scripts are sent by SHA; after a Redis restart the first call answers NOSCRIPT and is sent
once as EVAL, which loads the script again.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Sequence
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.connection import Connection
from redis.crc import key_slot
from redis.exceptions import RedisError

from llmproxy.common.lua import LuaScript
from llmproxy.common.redis import AnyRedis
from llmproxy.ratelimit.errors import StoreError
from llmproxy.ratelimit.resp import ReplyError, ScriptConnection
from llmproxy.ratelimit.rules import LOG
from llmproxy.ratelimit.store import Adjust, Outcome, Take, sum_key

_MAX_HEADS = 10_000  # distinct (algorithm, limit, window) argument prefixes kept encoded
TAKE = LuaScript.beside(__file__, "take.lua")
ADJUST = LuaScript.beside(__file__, "adjust.lua")
# Each script's command words on the lean connection, encoded once.
_EVALSHA = {s.sha: [b"EVALSHA", s.sha.encode()] for s in (TAKE, ADJUST)}
_EVAL = {s.sha: [b"EVAL", s.source.encode()] for s in (TAKE, ADJUST)}


async def _run_on(
    connection: ScriptConnection, script: LuaScript, keys: Sequence[bytes], args: Sequence[bytes]
) -> Any:
    """LuaScript.run on the lean connection: EVALSHA, then EVAL if Redis forgot the script."""
    count = b"%d" % len(keys)
    try:
        return await connection.call([*_EVALSHA[script.sha], count, *keys, *args])
    except ReplyError as exc:
        if not str(exc).startswith("NOSCRIPT"):
            raise
        return await connection.call([*_EVAL[script.sha], count, *keys, *args])


def _keys(key: str, algorithm: str) -> tuple[str, ...]:
    return (key, sum_key(key)) if algorithm == LOG else (key,)


def _lean_connection(client: AnyRedis) -> ScriptConnection | None:
    # Plain TCP to a standalone Redis only; TLS, unix sockets and Cluster stay on redis-py.
    if isinstance(client, RedisCluster):
        return None
    pool = client.connection_pool
    if pool.connection_class is not Connection:
        return None
    settings = pool.connection_kwargs
    return ScriptConnection(
        str(settings.get("host") or "localhost"),
        int(settings.get("port") or 6379),
        db=int(settings.get("db") or 0),
        username=settings.get("username"),
        password=settings.get("password"),
        connect_timeout_s=float(settings.get("socket_connect_timeout") or 1.0),
    )


def _outcomes(reply: list[Any], count: int) -> list[Outcome]:
    # take.lua's reply: the server time, then four numbers per check.
    now = int(reply[0])
    return [
        Outcome(
            reply[base] == 1,
            int(reply[base + 1]),
            int(reply[base + 2]),
            int(reply[base + 3]),
            now,
        )
        for base in range(1, 1 + 4 * count, 4)
    ]


class RedisLimitStore:
    """Sliding-window counters in Redis, decided by take.lua and corrected by adjust.lua."""

    def __init__(self, client: AnyRedis) -> None:
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        # Log members must be unique across instances: a random prefix, then a counter.
        self._prefix = os.urandom(6).hex().encode() + b"."
        self._ids = itertools.count()
        self._heads: dict[tuple[str, int, int], bytes] = {}
        self._lean = _lean_connection(client)

    def _run(self, script: LuaScript, keys: list[bytes], args: list[bytes]) -> Any:
        if self._lean is not None:
            return _run_on(self._lean, script, keys, args)
        return script.run(self._client, keys, args)

    def _take_call(self, ops: Sequence[Take]) -> tuple[list[bytes], list[bytes]]:
        keys: list[bytes] = []
        words: list[bytes] = []
        ids = self._ids
        heads = self._heads
        for op in ops:
            head = heads.get((op.algorithm, op.limit, op.window_ms))
            if head is None:
                head = b"%s %d %d" % (op.algorithm.encode(), op.limit, op.window_ms)
                if len(heads) < _MAX_HEADS:
                    heads[(op.algorithm, op.limit, op.window_ms)] = head
            key = op.key.encode()
            if op.algorithm == LOG:
                keys += (key, key + b":sum")
                words.append(b"%s %d %d" % (head, op.hits, next(ids)))
            else:
                keys.append(key)
                words.append(b"%s %d -" % (head, op.hits))
        return keys, [self._prefix, b" ".join(words)]

    def _adjust_call(self, ops: Sequence[Adjust]) -> tuple[list[bytes], list[bytes]]:
        keys: list[bytes] = []
        words: list[bytes] = []
        for op in ops:
            key = op.key.encode()
            if op.algorithm == LOG:
                keys += (key, key + b":sum")
                member = b"a%d" % next(self._ids)
            else:
                keys.append(key)
                member = b"-"
            words.append(
                b"%s %d %d %d %s"
                % (op.algorithm.encode(), op.window_ms, op.delta, op.at_ms, member)
            )
        return keys, [self._prefix, b" ".join(words)]

    def _by_slot(self, keys: Sequence[str]) -> list[list[int]]:
        # Indexes of ops grouped by cluster slot (one group on a standalone Redis).
        if not self._cluster:
            return [list(range(len(keys)))]
        groups: dict[int, list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(key_slot(key.encode()), []).append(index)
        return list(groups.values())

    async def take(self, ops: Sequence[Take]) -> list[Outcome]:
        """Decide every check; one script call per cluster slot (one in all on standalone)."""
        if not ops:
            return []
        try:
            if not self._cluster:
                return _outcomes(await self._run(TAKE, *self._take_call(ops)), len(ops))
            groups = self._by_slot([op.key for op in ops])
            replies = await asyncio.gather(
                *(self._run(TAKE, *self._take_call([ops[i] for i in group])) for group in groups)
            )
        except (RedisError, OSError, ReplyError) as exc:
            raise StoreError(f"redis: {exc}") from exc
        outcomes: list[Outcome | None] = [None] * len(ops)
        for group, reply in zip(groups, replies, strict=True):
            for index, outcome in zip(group, _outcomes(reply, len(group)), strict=True):
                outcomes[index] = outcome
        return [o for o in outcomes if o is not None]

    async def adjust(self, ops: Sequence[Adjust]) -> int:
        """Apply corrections, one script call per cluster slot."""
        if not ops:
            return 0
        groups = self._by_slot([op.key for op in ops])
        try:
            replies = await asyncio.gather(
                *(
                    self._run(ADJUST, *self._adjust_call([ops[i] for i in group]))
                    for group in groups
                )
            )
        except (RedisError, OSError, ReplyError) as exc:
            raise StoreError(f"redis: {exc}") from exc
        return sum(int(r) for r in replies)

    async def reset(self, key: str, algorithm: str) -> bool:
        """Delete the counter's keys."""
        try:
            # One DEL per key: they share a slot, but a cluster client splits multi-key DELs.
            deleted = 0
            for name in _keys(key, algorithm):
                deleted += int(await self._client.delete(name))
        except (RedisError, OSError) as exc:
            raise StoreError(f"redis: {exc}") from exc
        return deleted > 0

    async def ping(self) -> None:
        """Reconnect, PING, and load the scripts so the next decisions need no EVAL."""
        try:
            if not self._cluster:
                # Connections from before an outage are dead; dropping them now spares the
                # next decisions an error each (a cluster client re-discovers by itself).
                await self._client.connection_pool.disconnect()  # type: ignore[union-attr]
                if self._lean is not None:
                    self._lean.close()
            await self._client.ping()
            await TAKE.load(self._client)
            await ADJUST.load(self._client)
        except (RedisError, OSError) as exc:
            raise StoreError(f"redis: {exc}") from exc

    async def aclose(self) -> None:
        """Close the connection pool and the script connection."""
        if self._lean is not None:
            self._lean.close()
        await self._client.aclose()
