"""The limits in force, and their hot reload: validated first, the old limits kept on error.

Both the file watcher and the ReloadConfig RPC go through LimitsHolder.reload. A rejected file
is logged and counted (llmproxy_ratelimit_config_reloads_total{result="rejected"}); the limits
in force stay until a valid file replaces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from llmproxy.common.limits_file import LimitsConfigError, LoadedLimits, load_limits
from llmproxy.ratelimit import metrics
from llmproxy.ratelimit.rules import Limits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reloaded:
    """The result of a successful reload."""

    sha256: str
    changed: bool
    limit_count: int


class LimitsHolder:
    """Holds the compiled limits in force; reload swaps them only for a valid file."""

    def __init__(self, path: Path, domain: str) -> None:
        self.path = path
        self.domain = domain
        self._listeners: list[Callable[[], None]] = []
        self.loaded: LoadedLimits = load_limits(path, domain)  # the first load must succeed
        self.limits = Limits(self.loaded.spec)
        self.loaded_at = datetime.now(UTC)
        self._stamp = self._file_stamp()
        for result in ("applied", "unchanged", "rejected"):
            metrics.CONFIG_RELOADS.labels(result)  # every series exists from the start

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call listener after every change of the limits in force."""
        self._listeners.append(listener)

    def reload(self) -> Reloaded:
        """Read the file again; apply it if valid, else raise LimitsConfigError (old kept)."""
        self._stamp = self._file_stamp()
        try:
            loaded = load_limits(self.path, self.domain)
        except LimitsConfigError as exc:
            metrics.CONFIG_RELOADS.labels("rejected").inc()
            log.error(  # noqa: TRY400 - the message is the whole story, no traceback needed
                "limits file rejected; the limits in force stay", extra={"error": str(exc)}
            )
            raise
        if loaded.sha256 == self.loaded.sha256:
            metrics.CONFIG_RELOADS.labels("unchanged").inc()
            return Reloaded(loaded.sha256, False, len(self.limits.rules))
        limits = Limits(loaded.spec)
        self.loaded, self.limits, self.loaded_at = loaded, limits, datetime.now(UTC)
        metrics.CONFIG_RELOADS.labels("applied").inc()
        log.info("limits reloaded", extra={"sha256": loaded.sha256, "limits": len(limits.rules)})
        for listener in self._listeners:
            listener()
        return Reloaded(loaded.sha256, True, len(limits.rules))

    def reload_if_changed(self) -> None:
        """The watcher's step: reload when the file's stamp moved; errors are logged only."""
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return
        # A rejection is logged and counted by reload; the watcher keeps watching.
        with contextlib.suppress(LimitsConfigError):
            self.reload()

    async def watch(self, interval_s: float) -> None:
        """Check the file every interval_s until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            self.reload_if_changed()
