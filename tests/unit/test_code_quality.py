"""The tree stays clean under the checks pre-commit runs: ruff (lint and format), mypy, and the
architecture contract (import-linter, [tool.importlinter] in pyproject.toml)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
        ["lint-imports", "--no-cache"],
    ],
    ids=["ruff-check", "ruff-format", "mypy", "import-contract"],
)
def test_tree_is_clean(command: list[str]) -> None:
    done = subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_import_contract_fails_a_service_that_imports_another(tmp_path: Path) -> None:
    # A copy of the package with one forbidden import: the contract must catch it.
    package = tmp_path / "llmproxy"
    shutil.copytree(ROOT / "services" / "llmproxy", package)
    with (package / "health" / "dns.py").open("a") as dns:
        dns.write("\nfrom llmproxy.router import errors as _router_errors  # noqa: E402\n")
    done = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "llmproxy.health.dns -> llmproxy.router.errors" in done.stdout
