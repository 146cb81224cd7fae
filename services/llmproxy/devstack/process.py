"""One child process of the stack: started, probed until ready, stopped without leftovers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from llmproxy.common.errors import LlmproxyError

Probe = Callable[[], Awaitable[bool]]


class StartupError(LlmproxyError):
    """A component exited or did not become ready; the message ends with its log tail."""


class ManagedProcess:
    """A child process whose output goes to a log file, with a readiness probe."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        ready: Probe,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._ready = ready
        self._env = dict(env if env is not None else os.environ)
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self._popen.pid if self._popen else None

    def start(self) -> None:
        """Start the process (again, once a previous run has ended), logging to its log file."""
        if self._popen is not None:
            if self.running():
                raise StartupError(f"{self.name} is already running")
            self._popen.wait()  # reap the previous run
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # A new session: Ctrl-C in the terminal reaches the supervisor only, which then
            # stops the children in order.
            self._popen = subprocess.Popen(  # noqa: S603 - our own binaries, argv from config
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
            )

    def running(self) -> bool:
        """True while the process has not exited."""
        return self._popen is not None and self._popen.poll() is None

    async def wait_ready(self, timeout_s: float) -> None:
        """Poll the probe until it passes; raise StartupError if the process dies or time is up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise StartupError(f"{self.name} exited during startup\n{self.log_tail()}")
            if await self._ready():
                return
            await asyncio.sleep(0.05)
        raise StartupError(f"{self.name} not ready after {timeout_s}s\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        """Send signum to the process if it runs."""
        if self._popen is not None and self.running():
            self._popen.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the process and wait until it is gone: a crash, with no chance to clean up."""
        if self._popen is not None and self.running():
            self._popen.kill()
            self._popen.wait()

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, wait up to grace_s, then SIGKILL; returns the exit code."""
        if self._popen is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self._popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            return self._popen.wait()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the log, for error messages and failing tests."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        return "\n".join(text.splitlines()[-lines:])
