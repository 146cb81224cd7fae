"""Stored responses in a real Redis, through the router's gRPC API and the fake provider:
a follow-up turn, retrieval, deletion, owner scoping, the TTL, and a Redis that dies."""

from __future__ import annotations

import json
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from llmproxy._gen.router.v1 import openai_pb2
from llmproxy.common.contract import KEY_ID_HEADER, STATUS_HEADER, TENANT_HEADER
from llmproxy.devstack.redis import redis_process
from llmproxy.fakeprovider.responses import count_tokens
from llmproxy.router.stored_responses import response_key
from tests.harness import logs
from tests.harness.ports import free_port
from tests.harness.waiting import eventually
from tests.integration.router.conftest import Router, StartRouter


def owner(tenant: str) -> tuple[tuple[str, str], ...]:
    return ((TENANT_HEADER, tenant), (KEY_ID_HEADER, f"key-{tenant}"))


async def create(
    router: Router, body: dict[str, Any], tenant: str = "acme"
) -> tuple[int, dict[str, Any]]:
    call = router.openai.CreateResponse(
        openai_pb2.CreateResponseRequest(
            body={"data": json.dumps({"model": "gpt", **body}).encode()}
        ),
        metadata=owner(tenant),
    )
    data = b"".join([reply.data async for reply in call])
    metadata = dict((await call.initial_metadata()) or ())
    return int(metadata.get(STATUS_HEADER, "200")), json.loads(data)


async def stored(
    router: Router, response_id: str, tenant: str = "acme", delete: bool = False
) -> tuple[int, dict[str, Any]]:
    rpc = (
        router.openai.DeleteResponse(
            openai_pb2.DeleteResponseRequest(response_id=response_id), metadata=owner(tenant)
        )
        if delete
        else router.openai.GetResponse(
            openai_pb2.GetResponseRequest(response_id=response_id), metadata=owner(tenant)
        )
    )
    reply = await rpc
    metadata = dict((await rpc.initial_metadata()) or ())
    return int(metadata.get(STATUS_HEADER, "200")), json.loads(reply.data)


def store_errors() -> float:
    return REGISTRY.get_sample_value("llmproxy_responses_store_errors_total") or 0.0


async def test_a_conversation_is_stored_continued_retrieved_and_deleted(
    router: Router, redis_client: Any
) -> None:
    status, first = await create(router, {"input": "Name a colour", "instructions": "Be brief."})
    assert status == 200
    assert first["store"] is True
    status, second = await create(
        router, {"input": "And another one", "previous_response_id": first["id"]}
    )
    assert status == 200
    answer = first["output"][0]["content"][0]["text"]
    # The provider counted every word of the conversation: the first turn, less instructions.
    words = count_tokens(f"Name a colour {answer} And another one")
    assert second["usage"]["input_tokens"] == words
    assert second["previous_response_id"] == first["id"]
    ttl = await redis_client.ttl(response_key(second["id"]))
    assert 30 * 24 * 3600 - 60 < ttl <= 30 * 24 * 3600
    assert await stored(router, second["id"]) == (200, second)
    status, refused = await stored(router, second["id"], tenant="other")
    assert status == 404
    assert refused["error"]["type"] == "invalid_request_error"
    assert (await stored(router, second["id"], tenant="other", delete=True))[0] == 404
    assert await stored(router, second["id"], delete=True) == (
        200,
        {"id": second["id"], "object": "response", "deleted": True},
    )
    assert await redis_client.exists(response_key(second["id"])) == 0
    status, gone = await create(router, {"input": "More", "previous_response_id": second["id"]})
    assert status == 404
    assert gone["error"]["param"] == "previous_response_id"


async def test_store_false_is_not_kept(router: Router, redis_client: Any) -> None:
    status, created = await create(router, {"input": "Hi", "store": False})
    assert status == 200
    assert created["store"] is False
    assert await redis_client.keys("llmproxy:response:*") == []


async def test_the_ttl_and_the_switch_come_from_the_settings(
    start_router: StartRouter, redis_client: Any
) -> None:
    router = await start_router(responses={"store_ttl_s": 120})
    _, created = await create(router, {"input": "Hi"})
    assert 60 < await redis_client.ttl(response_key(created["id"])) <= 120
    off = await start_router(responses={"store": False})
    _, created = await create(off, {"input": "Hi"})
    assert created["store"] is False
    status, refused = await create(off, {"input": "Hi", "previous_response_id": "resp_1"})
    assert status == 400
    assert refused["error"]["param"] == "previous_response_id"


async def test_redis_down_fails_only_what_needs_the_store(
    start_router: StartRouter, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    redis = redis_process(url, tmp_path / "redis", tmp_path / "redis.log")
    logs.watch(request.node, redis)
    async with AsyncExitStack() as stack:
        redis.start()
        stack.callback(redis.stop)
        await redis.wait_ready(15)
        router = await start_router(url)
        _, before = await create(router, {"input": "Hi"})
        redis.signal(signal.SIGKILL)
        errors = store_errors()
        status, answered = await create(router, {"input": "Still answered"})
        assert status == 200  # answered, not stored
        assert answered["output"][0]["content"][0]["text"].endswith("Still answered")
        assert store_errors() == errors + 1
        status, refused = await create(
            router, {"input": "Next", "previous_response_id": before["id"]}
        )
        assert status == 503
        assert refused["error"]["code"] == "store_unavailable"
        assert (await stored(router, before["id"]))[0] == 503
        redis.start()  # the same port, empty (no persistence)
        await redis.wait_ready(15)

        async def continued() -> int:
            _, created = await create(router, {"input": "Back"})
            status, _ = await create(
                router, {"input": "Next", "previous_response_id": created["id"]}
            )
            return status

        await eventually(continued, lambda status: status == 200, what="storing back")
