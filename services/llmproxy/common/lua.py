"""Lua scripts that run in Redis: read once from a `.lua` file beside their module, run by SHA.

EVALSHA sends 40 bytes instead of the script; when Redis answers NOSCRIPT (it restarted, failed
over, or a cluster node never saw the script) the call is repeated with EVAL, which also caches
the script there again. The same for a standalone Redis and a Redis Cluster client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError

from llmproxy.common.redis import AnyRedis

KeyOrArg = str | bytes | int | float


class LuaScript:
    """One script: its source, its SHA1, and a way to run it on any of our Redis clients."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    @classmethod
    def beside(cls, module_file: str, name: str) -> LuaScript:
        """The script in file `name` in the folder of `module_file` (pass `__file__`)."""
        return cls(Path(module_file).with_name(name).read_text())

    async def run(
        self, client: AnyRedis, keys: Sequence[KeyOrArg], args: Sequence[KeyOrArg]
    ) -> Any:
        """EVALSHA the script, or EVAL it where Redis does not have it (yet, or any more)."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)

    async def load(self, client: AnyRedis) -> None:
        """Cache the script in Redis now, so the next runs need no EVAL."""
        await client.script_load(self.source)
