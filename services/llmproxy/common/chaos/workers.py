"""What actually stresses the process: a CPU-burning thread and a block of touched memory.

Each worker starts in its constructor and ends with stop(), which is idempotent and quick, so the
engine can undo a stress from a timer thread, an RPC or shutdown alike.
"""

from __future__ import annotations

import mmap
import threading
import time
from pathlib import Path
from typing import Protocol

MIB = 1024 * 1024
DUTY_PERIOD_S = 0.1
"""One busy-then-idle cycle of the CPU burner: short, so the service's slowdown is even."""


class Worker(Protocol):
    """A running stress."""

    def stop(self) -> None:
        """Undo the stress; calling it again does nothing."""


class CpuBurner:
    """Keeps `cores` of one core busy in a daemon thread, as a busy/idle duty cycle.

    The busy part is a pure-Python loop that holds the GIL, like a runaway computation inside the
    service would: the process's CPU time rises and its event loop gets less of the interpreter,
    yet the idle part of each cycle keeps it answering.
    """

    def __init__(self, cores: float) -> None:
        self.cores = cores
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-cpu-burner", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        busy_s = DUTY_PERIOD_S * self.cores
        idle_s = DUTY_PERIOD_S - busy_s
        while not self._stopped.is_set():
            until = time.perf_counter() + busy_s
            while time.perf_counter() < until:
                pass
            if idle_s > 0:
                self._stopped.wait(idle_s)

    def stop(self) -> None:
        """Stop burning; the thread ends within one duty period."""
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * DUTY_PERIOD_S)


class MemoryHog:
    """Holds `megabytes` MiB of anonymous memory, every page written so it counts in RSS.

    An anonymous mmap rather than bytearrays: closing it unmaps the pages at once, whereas
    malloc may keep freed heap memory in the process and RSS would not fall at expiry.
    """

    def __init__(self, megabytes: int) -> None:
        self.megabytes = megabytes
        self._lock = threading.Lock()
        self._block: mmap.mmap | None = mmap.mmap(-1, megabytes * MIB)
        page = b"\x01" * MIB
        try:
            for _ in range(megabytes):
                self._block.write(page)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Give the memory back to the operating system."""
        with self._lock:
            if self._block is not None:
                self._block.close()
                self._block = None


def available_megabytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable of the machine in MiB, or None where the kernel does not say."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
