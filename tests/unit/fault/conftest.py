"""Fixtures the fault service's unit tests share: an in-memory Redis and a settable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest

from tests.unit.fault.test_controller import Clock


@pytest.fixture
async def redis() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()
