"""A Redis crash is no outage: steady traffic with a known key gets no 5xx while Redis is killed
and restarted, and the same key works after. Its own stack, since the test kills Redis."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from llmproxy.devstack.authz import create_demo_key
from llmproxy.devstack.stack import Stack
from tests.harness.waiting import eventually

RATE_PER_S = 10
OUTAGE_S = 15
BACK_WITHIN_S = 10


async def test_known_keys_see_no_5xx_while_redis_is_killed_and_restarted(
    own_stack: Stack,
) -> None:
    token = own_stack.environ[own_stack.config.control.admin_token_env]
    key = await create_demo_key(own_stack.config, token)
    envoy = own_stack.config.envoy
    url = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
    headers = {"authorization": f"Bearer {key}"}
    statuses: dict[str, Counter[int]] = {
        "before": Counter(),
        "outage": Counter(),
        "after": Counter(),
    }
    phase = "before"
    redis = own_stack.processes["redis"]

    async def one(client: httpx.AsyncClient, index: int) -> None:
        # A new prompt each time: every request goes through the cache's miss path too.
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {index}"}]}
        started = phase
        response = await client.post(url, json=body, headers=headers)
        statuses[started][response.status_code] += 1

    async def traffic(
        client: httpx.AsyncClient, seconds: float, start: int
    ) -> list[asyncio.Task[None]]:
        tasks = []
        for index in range(int(seconds * RATE_PER_S)):
            tasks.append(asyncio.create_task(one(client, start + index)))
            await asyncio.sleep(1 / RATE_PER_S)
        return tasks

    async with httpx.AsyncClient(timeout=30) as client:
        tasks = await traffic(client, 3, 0)
        phase = "outage"
        redis.kill()  # kill -9: no shutdown, no save
        tasks += await traffic(client, OUTAGE_S, 1000)
        outage_modes = await own_stack.service_modes()  # what make up's banner reports
        phase = "after"
        redis.start()  # the same arguments and data folder, as a supervisor restarts it
        await redis.wait_ready(15)
        tasks += await traffic(client, BACK_WITHIN_S, 2000)
        await asyncio.gather(*tasks)
        # The same key, still known to Redis after the restart (its record was persisted).
        last = await client.post(
            url,
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "last"}]},
            headers=headers,
        )
    failures = {phase: {s: n for s, n in c.items() if s >= 500} for phase, c in statuses.items()}
    assert failures == {"before": {}, "outage": {}, "after": {}}, statuses
    assert {s for c in statuses.values() for s in c} == {200}, statuses
    assert last.status_code == 200
    assert set(outage_modes.values()) == {"degraded"}, outage_modes
    await eventually(
        own_stack.service_modes,
        lambda modes: set(modes.values()) == {"normal"},
        what="every service back on Redis",
    )
    # The outage was real for the services: authz answered from its last-known records.
    authz_log = (own_stack.workdir / "logs" / "authz.log").read_text()
    assert "known keys are authorized from their last-known records" in authz_log
    assert "redis reachable again" in authz_log
