"""The documentation runs as written: every command block of README.md and docs/ tagged
`doc-test` is run against a stack in demo mode, with only the variables `make up` prints set
to that stack's values.

A block's info string says how it runs: ```sh doc-test (bash, `set -euo pipefail`, must exit 0
and print something), ```sh doc-test stream (a stream: it must print and keep running until it
is stopped, as Ctrl-C would) and ```python doc-test (the venv's Python). Blocks run from the
repository's root, each in a fresh shell, so every block stands on its own. The stack is this
module's own: the examples create keys and experiments that other tests must not see.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmproxy.devstack.authz import create_demo_key
from llmproxy.devstack.exports import shell_exports
from llmproxy.devstack.stack import Stack
from tests.harness import logs
from tests.harness.configs import stack_config_data, write_config
from tests.harness.waiting import eventually_sync

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TAG = "doc-test"
# The variables a reader has: those `make up` prints (the admin token only when it made one,
# so it is named here too) and the shell's own.
PRINTED = {
    "LLMPROXY_API",
    "LLMPROXY_CONTROL",
    "LLMPROXY_ENVOY_ADMIN",
    "LLMPROXY_HEALTH",
    "LLMPROXY_KEY",
    "LLMPROXY_ADMIN_TOKEN",
    "GRPCURL",
}
SHELL_VARIABLES = {"HOME", "PATH", "USER", "PWD"}
BLOCK_TIMEOUT_S = 60.0
STREAM_OUTPUT_S = 15.0


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: where it starts, its language, its tags and its text."""

    page: str
    line: int
    language: str
    tags: tuple[str, ...]
    text: str

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of a markdown page, in order."""
    blocks: list[Block] = []
    opened: tuple[int, list[str]] | None = None
    body: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.startswith("```"):
            body.append(line)
            continue
        if opened is None:
            opened, body = (number, line[3:].split()), []
            continue
        start, info = opened
        language, tags = (info[0], tuple(info[1:])) if info else ("", ())
        page = str(path.relative_to(ROOT))
        blocks.append(Block(page, start, language, tags, "\n".join(body)))
        opened = None
    assert opened is None, f"{path}: the block opened at line {opened[0]} is never closed"
    return blocks


ALL_BLOCKS = [block for page in PAGES for block in fenced_blocks(page)]
RUN = [b for b in ALL_BLOCKS if TAG in b.tags and "stream" not in b.tags]
STREAMS = [b for b in ALL_BLOCKS if TAG in b.tags and "stream" in b.tags]


def _referenced(block: Block) -> set[str]:
    if block.language == "python":
        return set(re.findall(r"os\.environ\[['\"](\w+)['\"]\]", block.text))
    return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", block.text))


def _assigned(block: Block) -> set[str]:
    return set(re.findall(r"(?:^|[\s;(])([A-Za-z_][A-Za-z0-9_]*)=", block.text, re.MULTILINE))


@pytest.fixture(scope="module")
def documented(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, dict[str, str]]]:
    """A stack in demo mode, and the environment of a reader who pasted the banner's exports."""
    workdir = tmp_path_factory.mktemp("docs-stack")
    path, config = write_config(workdir, stack_config_data())
    stack = Stack(config, path, workdir, os.environ)
    asyncio.run(stack.start())
    try:
        token = stack.environ[config.control.admin_token_env]
        key = asyncio.run(create_demo_key(config, token))
        exports = shell_exports(stack, key)
        assert set(exports) <= PRINTED
        yield stack, {**stack.environ, **exports}
    finally:
        stack.stop()


@pytest.fixture
def reader(
    request: pytest.FixtureRequest, documented: tuple[Stack, dict[str, str]]
) -> dict[str, str]:
    stack, environ = documented
    logs.watch(request.node, *stack.processes.values())
    return environ


def test_the_docs_have_runnable_blocks() -> None:
    assert len(RUN) >= 20
    assert STREAMS
    assert {b.page for b in RUN} >= {"README.md", "docs/api.md", "docs/fault.md"}


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda b: b.name)
def test_every_block_using_the_stack_is_run_and_uses_only_printed_variables(
    block: Block,
) -> None:
    used = _referenced(block)
    if block.language in ("sh", "bash", "python") and used & PRINTED:
        assert TAG in block.tags, f"{block.name} uses the stack but is not tagged {TAG}"
    if TAG in block.tags:
        assert block.language in ("sh", "python"), block.name
        unknown = used - _assigned(block) - PRINTED - SHELL_VARIABLES
        assert not unknown, f"{block.name} uses variables `make up` does not print: {unknown}"


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.name)
def test_documented_commands_run_as_written(block: Block, reader: dict[str, str]) -> None:
    if block.language == "python":
        argv = [sys.executable, "-"]
        script = block.text
    else:
        argv = ["bash", "-s"]
        script = "set -euo pipefail\n" + block.text
    done = subprocess.run(
        argv,
        input=script,
        cwd=ROOT,
        env=reader,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
        check=False,
    )
    shown = f"{block.name}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, shown
    assert done.stdout.strip(), shown
    assert "Traceback" not in done.stdout + done.stderr, shown


def _collect(stream: subprocess.Popen[str], lines: list[str]) -> None:
    assert stream.stdout is not None
    for line in stream.stdout:
        lines.append(line)


@pytest.fixture
def ctrl_c_stops_children() -> Iterator[None]:
    """Ctrl-C stops a block as it does in a terminal, even when the suite runs in the background
    of a shell: its processes start with SIGINT ignored, which children would inherit."""
    before = signal.getsignal(signal.SIGINT)
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # reset to default on exec
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("block", STREAMS, ids=lambda b: b.name)
@pytest.mark.usefixtures("ctrl_c_stops_children")
def test_documented_streams_print_and_keep_running(block: Block, reader: dict[str, str]) -> None:
    lines: list[str] = []
    with subprocess.Popen(
        ["bash", "-c", block.text],
        cwd=ROOT,
        env=reader,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        reading = threading.Thread(target=_collect, args=(process, lines), daemon=True)
        reading.start()
        try:

            def printed() -> bool:
                assert process.poll() is None, f"{block.name} ended: {''.join(lines)}"
                return any("}" in line for line in lines)

            eventually_sync(
                printed, what=f"{block.name} prints a message", timeout_s=STREAM_OUTPUT_S
            )
            assert process.poll() is None, f"{block.name} ended: {''.join(lines)}"
        finally:
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                pytest.fail(f"{block.name} did not stop on Ctrl-C")
            reading.join(5)
        assert process.stderr is not None
        errors = process.stderr.read()
    assert "Traceback" not in errors, errors
