"""Fixtures shared by every test: real processes on loopback, logs attached on failure."""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from llmproxy.authz.settings import HMAC_SECRET_ENV
from llmproxy.common.settings import ControlSettings
from llmproxy.devstack.stack import Stack
from tests.harness import logs
from tests.harness.configs import stack_config_data, write_config
from tests.harness.redis_server import redis_server

TESTS = Path(__file__).parent
# Each directory's tests carry its marker, so `-m unit` (or integration, e2e, performance)
# selects by kind without a `pytestmark` line in every module.
KINDS = ("unit", "integration", "e2e", "performance")


def pytest_configure(config: pytest.Config) -> None:
    # Tests never reach real providers: without keys the stack is always in demo mode.
    for name in [n for n in os.environ if n.endswith("_API_KEY")]:
        del os.environ[name]
    # The authz service needs an HMAC secret and an admin token, every service the service
    # token; each test run makes its own, for every stack and in-process service it starts.
    control = ControlSettings()
    for name in (HMAC_SECRET_ENV, control.admin_token_env, control.service_token_env):
        os.environ[name] = secrets.token_urlsafe(32)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kind = item.path.relative_to(TESTS).parts[0]
        if kind in KINDS:
            item.add_marker(kind)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    logs.attach(item, report)
    return report


def _docker_engine_available() -> bool:
    try:
        done = subprocess.run(
            ["docker", "info"],
            capture_output=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture(scope="module", autouse=True)
def leaks_found_where_they_happen(request: pytest.FixtureRequest) -> Iterator[None]:
    """Collect garbage after each module that runs real processes and clients.

    An unclosed client (a Redis connection, a socket) warns when the garbage collector finds
    it, in whichever test is running then. Collecting here makes the warning fail the module
    that leaked it, not a later test that merely collected.
    """
    yield
    if request.path.relative_to(TESTS).parts[0] in {"integration", "e2e"}:
        gc.collect()


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip unless a Docker engine answers: the testcontainers backend needs one."""
    if not _docker_engine_available():
        pytest.skip("needs a Docker engine (testcontainers backend); none is reachable here")


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the whole session; yields its URL."""
    with redis_server(tmp_path_factory.mktemp("redis")) as (url, _process):
        yield url


@pytest.fixture
async def redis_client(redis_process: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the session's Redis, flushed before and closed after each test."""
    client = aioredis.Redis.from_url(redis_process)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole stack (Redis, fake provider, five services, Envoy) on free ports, in demo mode."""
    workdir = tmp_path_factory.mktemp("stack")
    path, config = write_config(workdir, stack_config_data())
    running = Stack(config, path, workdir, os.environ)
    asyncio.run(running.start())
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def stack_logs(request: pytest.FixtureRequest, stack: Stack) -> Stack:
    """The stack, with its logs attached to this test's report if it fails."""
    logs.watch(request.node, *stack.processes.values())
    return stack


@pytest.fixture
def tmp_config(tmp_path: Path) -> Path:
    """A valid configuration file with free ports, in the test's temporary folder."""
    path, _ = write_config(tmp_path, stack_config_data())
    return path
