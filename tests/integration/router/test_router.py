"""The router over HTTP to the fake provider, with its cache in a real Redis."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
import redis.asyncio as aioredis

from llmproxy._gen.router.v1 import openai_pb2, router_pb2
from llmproxy.common.usage import RedisUsageStore
from llmproxy.router.providers import sse
from tests.harness.waiting import eventually
from tests.integration.router.conftest import Router, StartRouter

HELLO = [{"role": "user", "content": "Hello router"}]
CACHED = {"model": "gpt", "messages": HELLO, "temperature": 0}
ACME = "acme"


async def test_openai_provider_answer_and_cache_hit_in_redis(
    router: Router, redis_client: aioredis.Redis
) -> None:
    miss, first = await router.chat(CACHED)
    hit, second = await router.chat({**CACHED, "model": "gpt-latest"})
    assert (miss["x-cache"], hit["x-cache"]) == ("MISS", "HIT")
    assert first == second
    assert json.loads(first[0])["choices"][0]["message"]["content"] == (
        "This is a fake answer to: Hello router"
    )
    assert len(await redis_client.keys("llmproxy:cache:{*")) == 1


async def test_anthropic_target_is_translated_both_ways(router: Router) -> None:
    metadata, replies = await router.chat(
        {
            "model": "claude",
            "messages": [{"role": "system", "content": "be brief"}, *HELLO],
            "max_tokens": 50,
        }
    )
    assert metadata["x-llmproxy-provider"] == "claude"
    answer = json.loads(replies[0])
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "This is a fake answer to: Hello router"
    assert answer["choices"][0]["finish_reason"] == "stop"
    usage = answer["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_anthropic_stream_becomes_openai_chunks(router: Router) -> None:
    _, events = await router.chat(
        {
            "model": "claude",
            "messages": HELLO,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert events[-1] == sse.DONE
    payloads = [sse.data_json(e) for e in events[:-1]]
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads if p["choices"])
    assert text == "This is a fake answer to: Hello router"
    assert payloads[-1]["choices"] == []
    assert payloads[-1]["usage"]["completion_tokens"] > 0


async def test_failover_from_a_down_provider(router: Router) -> None:
    router.provider.knobs.outage = "503"
    metadata, replies = await router.chat({"model": "claude-then-gpt", "messages": HELLO})
    assert metadata["x-llmproxy-status"] == "503"
    assert json.loads(replies[0])["error"]["type"] == "upstream_error"
    router.provider.knobs.outage = "none"
    metadata, _ = await router.chat({"model": "claude-then-gpt", "messages": HELLO})
    assert metadata["x-llmproxy-provider"] == "claude"


async def test_embeddings_are_cached_by_default(router: Router) -> None:
    request = openai_pb2.CreateEmbeddingRequest(
        body={"data": json.dumps({"model": "embed", "input": ["a b", "c"]}).encode()}
    )
    first = await router.openai.CreateEmbedding(request)
    call = router.openai.CreateEmbedding(request)
    second = await call
    assert dict(await call.initial_metadata())["x-cache"] == "HIT"
    assert first.data == second.data
    assert len(json.loads(first.data)["data"]) == 2


async def test_models_list_names_and_aliases(router: Router) -> None:
    reply = await router.openai.ListOpenAIModels(openai_pb2.ListOpenAIModelsRequest())
    ids = [m["id"] for m in json.loads(reply.data)["data"]]
    assert ids == ["gpt", "gpt-latest", "claude", "embed", "claude-then-gpt"]


async def test_invalidation_by_key_model_tag_and_all(
    router: Router, redis_client: aioredis.Redis
) -> None:
    async def cached(body: dict[str, object], headers: dict[str, str] | None = None) -> str:
        metadata, _ = await router.chat(body, headers)
        return metadata["x-cache"]

    tagged = {"x-llmproxy-cache-tags": "faq"}
    await cached(CACHED, tagged)
    await cached({**CACHED, "model": "claude"})
    await cached({**CACHED, "messages": [{"role": "user", "content": "other"}]})
    by_tag = await router.control.InvalidateCache(router_pb2.InvalidateCacheRequest(tags=["faq"]))
    assert by_tag.removed == 1
    assert await cached(CACHED) == "MISS"
    by_model = await router.control.InvalidateCache(
        router_pb2.InvalidateCacheRequest(models=["claude"])
    )
    assert by_model.removed == 1
    everything = await router.control.InvalidateCache(router_pb2.InvalidateCacheRequest(all=True))
    assert everything.removed == 2
    assert await redis_client.keys("llmproxy:cache:{*") == []


async def test_invalidation_needs_a_selector(router: Router) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await router.control.InvalidateCache(router_pb2.InvalidateCacheRequest())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await router.control.InvalidateCache(router_pb2.InvalidateCacheRequest(keys=["nothex"]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_stats_count_hits_misses_and_savings(router: Router) -> None:
    await router.chat(CACHED)
    await router.chat(CACHED)
    await router.chat(CACHED)
    await router.chat({**CACHED, "temperature": 1})
    stats = await router.control.GetCacheStats(router_pb2.GetCacheStatsRequest())
    (gpt,) = [m for m in stats.models if m.model == "gpt"]
    assert (gpt.hits, gpt.misses, gpt.bypasses) == (2, 1, 1)
    assert gpt.hit_ratio == pytest.approx(2 / 3)
    assert gpt.saved_tokens > 0
    assert gpt.saved_usd > 0
    assert gpt.bytes_served > 0


async def test_warming_from_jsonl(router: Router) -> None:
    jsonl = "\n".join(
        [
            json.dumps({"model": "gpt", "messages": HELLO}),
            json.dumps({"endpoint": "embeddings", "model": "embed", "input": "x"}),
            json.dumps({"model": "gpt", "messages": HELLO}),
            "not json",
            json.dumps({"model": "nope", "messages": HELLO}),
        ]
    )
    reply = await router.control.WarmCache(router_pb2.WarmCacheRequest(jsonl=jsonl, tenant=ACME))
    assert (reply.cached, reply.already_cached) == (2, 1)
    assert [f.line for f in reply.failures] == [4, 5]
    acme = {"x-llmproxy-cache": "force", "x-llmproxy-tenant": ACME}
    metadata, _ = await router.chat({"model": "gpt", "messages": HELLO, "temperature": 1}, acme)
    assert metadata["x-cache"] == "BYPASS" or metadata["x-cache"] == "MISS"
    metadata, _ = await router.chat({"model": "gpt", "messages": HELLO}, acme)
    assert metadata["x-cache"] == "HIT"
    # Warmed for acme only: another tenant's identical request is a miss.
    other = {**acme, "x-llmproxy-tenant": "globex"}
    metadata, _ = await router.chat({"model": "gpt", "messages": HELLO}, other)
    assert metadata["x-cache"] == "MISS"


async def test_warming_needs_a_valid_tenant_under_tenant_scope(router: Router) -> None:
    jsonl = json.dumps({"model": "gpt", "messages": HELLO})
    for tenant, says in (
        ("", "tenant is required"),
        ("x" * 65, "must be 1-64 letters"),
        ("a\nb", "must be 1-64 letters"),
        ("-acme", "starting with a letter or digit"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await router.control.WarmCache(router_pb2.WarmCacheRequest(jsonl=jsonl, tenant=tenant))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert says in (raised.value.details() or "")
    # Nothing was cached by the refused calls.
    metadata, _ = await router.chat(CACHED, {"x-llmproxy-tenant": ""})
    assert metadata["x-cache"] == "MISS"


async def test_tenants_do_not_share_cached_answers_by_default(router: Router) -> None:
    acme, globex = {"x-llmproxy-tenant": ACME}, {"x-llmproxy-tenant": "globex"}
    assert (await router.chat(CACHED, acme))[0]["x-cache"] == "MISS"
    assert (await router.chat(CACHED, acme))[0]["x-cache"] == "HIT"
    # globex cannot learn from x-cache that acme sent this prompt.
    assert (await router.chat(CACHED, globex))[0]["x-cache"] == "MISS"
    assert (await router.chat(CACHED, globex))[0]["x-cache"] == "HIT"
    removed = await router.control.InvalidateCache(
        router_pb2.InvalidateCacheRequest(tenants=[ACME])
    )
    assert removed.removed == 1
    assert (await router.chat(CACHED, acme))[0]["x-cache"] == "MISS"
    assert (await router.chat(CACHED, globex))[0]["x-cache"] == "HIT"


async def test_global_scope_shares_answers_across_tenants(
    start_router: StartRouter, redis_client: aioredis.Redis
) -> None:
    router = await start_router(cache={"scope": "global"})
    assert (await router.chat(CACHED, {"x-llmproxy-tenant": ACME}))[0]["x-cache"] == "MISS"
    hit = await router.chat(CACHED, {"x-llmproxy-tenant": "globex"})
    assert hit[0]["x-cache"] == "HIT"
    # Warming takes no tenant then: the entry is everyone's.
    jsonl = json.dumps({"model": "gpt", "messages": [{"role": "user", "content": "w"}]})
    reply = await router.control.WarmCache(router_pb2.WarmCacheRequest(jsonl=jsonl))
    assert reply.cached == 1


async def test_the_stacks_redis_gets_no_eviction_settings(
    router: Router, redis_client: aioredis.Redis
) -> None:
    # The cache shares the stack's Redis here (no cache.redis_url): the router leaves its
    # eviction alone, so cache pressure cannot evict API keys or counters.
    assert (await redis_client.config_get("maxmemory-policy"))["maxmemory-policy"] == ("noeviction")


async def test_fifty_identical_requests_make_one_provider_call(router: Router) -> None:
    router.provider.knobs.latency_ms = 200
    results = await asyncio.gather(*(router.chat(CACHED) for _ in range(50)))
    assert len({tuple(r[1]) for r in results}) == 1
    outcomes = sorted(r[0]["x-cache"] for r in results)
    assert outcomes == ["HIT"] * 49 + ["MISS"]


async def test_usage_is_counted_per_key_tenant_and_model_with_cost(
    router: Router, redis_client: aioredis.Redis
) -> None:
    identity = {"x-llmproxy-tenant": "acme", "x-llmproxy-user": "ann", "x-llmproxy-key-id": "k1"}
    _, replies = await router.chat({"model": "gpt", "messages": HELLO}, identity)
    _, events = await router.chat({"model": "gpt", "messages": HELLO, "stream": True}, identity)
    usage = json.loads(replies[0])["usage"]
    store = RedisUsageStore(redis_client)
    expected = 2 * (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6
    # The router writes usage in batches (every 0.5 s by default).
    await eventually(
        lambda: store.spend_usd("key", "k1", "day"), lambda v: v > 0, what="spend recorded"
    )
    assert await store.spend_usd("key", "k1", "day") == pytest.approx(expected)
    assert await store.spend_usd("tenant", "acme", "month") == pytest.approx(expected)
    assert await store.spend_usd("model", "gpt", "day") == pytest.approx(expected)
    # The router asked for usage; the client did not, so it sees no usage chunk.
    payloads = [sse.data_json(e) for e in events]
    assert not [p for p in payloads if isinstance(p, dict) and p.get("usage")]
