"""The edge tier through real Envoy: per-address buckets ahead of authz, as a client sees them.

Each test has a stack of its own with tiny buckets that refill one token every 1000 s, so no
token comes back during a test and every count is exact. Clients are told apart by
X-Forwarded-For, which Envoy trusts only with `edge.xff_num_trusted_hops: 1`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import anthropic
import grpc
import httpx
import openai
import pytest

from llmproxy._gen.router.v1 import chat_pb2, chat_pb2_grpc
from llmproxy.devstack.authz import create_demo_key
from llmproxy.devstack.stack import Stack
from llmproxy.envoyconf.edge import EDGE_LIMIT_HEADER
from tests.harness.waiting import eventually

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
BURST = 10  # per client address
BURST_WITHOUT_CREDENTIAL = 3
SLOW = 0.001  # one token every 1000 s


def edge(hops: int) -> dict[str, Any]:
    """Configuration overrides: tiny per-address buckets, hops trusted proxies."""
    return {
        # Requests the edge admits all reach authz at once: on a busy machine its default
        # 0.5 s could pass, and a 503 is not what these tests are about.
        "envoy": {"ext_authz_timeout_s": 5},
        "edge": {
            "xff_num_trusted_hops": hops,
            "per_client_ip": {"rate_per_s": SLOW, "burst": BURST},
            "per_client_ip_without_credential": {
                "rate_per_s": SLOW,
                "burst": BURST_WITHOUT_CREDENTIAL,
            },
        },
    }


behind_a_proxy = pytest.mark.parametrize("own_stack", [edge(1)], indirect=True, ids=["hops=1"])
facing_clients = pytest.mark.parametrize("own_stack", [edge(0)], indirect=True, ids=["hops=0"])


class Edge:
    """A client of one stack's client listener, with its admin and authz metrics at hand."""

    def __init__(self, stack: Stack, client: httpx.AsyncClient) -> None:
        envoy = stack.config.envoy
        self.stack = stack
        self.client = client
        self.url = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
        self.admin = f"http://{envoy.host}:{envoy.admin_port}"

    async def chats(
        self, count: int, key: str | None, forwarded_for: str | None = None
    ) -> list[httpx.Response]:
        """count chat requests at once, from forwarded_for (as the proxy in front says)."""
        headers = {"authorization": f"Bearer {key}"} if key is not None else {}
        if forwarded_for is not None:
            headers["x-forwarded-for"] = forwarded_for
        return list(
            await asyncio.gather(
                *(self.client.post(self.url, json=CHAT, headers=headers) for _ in range(count))
            )
        )

    async def authz_verdicts(self) -> int:
        """ext_authz checks Envoy got an answer to (allowed or denied)."""
        text = (
            await self.client.get(f"{self.admin}/stats?filter=^http\\.client\\.ext_authz\\.")
        ).text
        counts = dict(line.split(": ") for line in text.splitlines())
        return sum(int(counts.get(f"http.client.ext_authz.{name}", 0)) for name in ("ok", "denied"))

    async def checks_handled(self) -> int:
        """Check RPCs the authz service has answered (its own counter)."""
        port = self.stack.config.services.authz.metrics_port
        text = (await self.client.get(f"http://127.0.0.1:{port}/metrics")).text
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith("llmproxy_grpc_server_handled_total{") and 'method="Check"' in line
        )


def statuses(answers: list[httpx.Response]) -> Counter[int]:
    return Counter(a.status_code for a in answers)


def assert_edge_refusal(answer: httpx.Response, bucket: str) -> None:
    """An edge 429 looks like the exact tier's: OpenAI's body, retry-after, x-ratelimit-*."""
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["retry-after"] == "1000"
    assert answer.headers["x-ratelimit-remaining"] == "0"
    assert answer.headers["x-ratelimit-reset"] == "1000"
    assert answer.headers[EDGE_LIMIT_HEADER] == bucket
    error = answer.json()["error"]
    assert error["type"] == "rate_limit_exceeded"
    assert error["code"] == "requests"
    assert error["message"] == (
        f"Rate limit reached at the gateway's edge ({bucket}). Please try again in 1000s."
    )


@behind_a_proxy
async def test_a_client_over_its_edge_limit_gets_a_429_while_another_is_served(
    own_stack: Stack,
) -> None:
    token = own_stack.environ[own_stack.config.control.admin_token_env]
    key = await create_demo_key(own_stack.config, token)
    async with httpx.AsyncClient(timeout=30) as client:
        gateway = Edge(own_stack, client)
        answers = await gateway.chats(BURST + 2, key, forwarded_for="203.0.113.7")
        assert statuses(answers) == {200: BURST, 429: 2}
        refused = next(a for a in answers if a.status_code == 429)
        assert_edge_refusal(refused, "per_client_ip")
        assert refused.headers["x-ratelimit-limit"] == f"{BURST}, 1;w=1000;burst={BURST}"

        assert statuses(await gateway.chats(1, key, forwarded_for="203.0.113.8")) == {200: 1}

        # A malformed X-Forwarded-For counts as the peer's address (loopback here).
        assert statuses(await gateway.chats(BURST, key, forwarded_for="not-an-address")) == {
            200: BURST
        }
        (peer,) = await gateway.chats(1, key)
        assert_edge_refusal(peer, "per_client_ip")

    sdk = openai.OpenAI(
        base_url=gateway.url.removesuffix("/chat/completions"),
        api_key=key,
        max_retries=0,
        default_headers={"x-forwarded-for": "203.0.113.7"},
    )
    with pytest.raises(openai.RateLimitError, match="gateway's edge"):
        sdk.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    # On Anthropic's Messages API the same refusal is in Anthropic's shape.
    with (
        anthropic.Anthropic(
            base_url=gateway.url.removesuffix("/v1/chat/completions"),
            api_key=key,
            max_retries=0,
            default_headers={"x-forwarded-for": "203.0.113.7"},
        ) as claude,
        pytest.raises(anthropic.RateLimitError) as limited,
    ):
        claude.messages.create(model="gpt-4o-mini", max_tokens=5, messages=CHAT["messages"])  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "1000"
    assert limited.value.body == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "Rate limit reached at the gateway's edge (per_client_ip). "
            "Please try again in 1000s.",
        },
    }

    # gRPC clients of the typed API get the status for a limit, and the same metadata.
    envoy = own_stack.config.envoy
    async with grpc.aio.insecure_channel(f"{envoy.host}:{envoy.listener_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await chat_pb2_grpc.ChatServiceStub(channel).Chat(
                chat_pb2.ChatRequest(
                    model="gpt-4o-mini", messages=[chat_pb2.ChatMessage(role="user", content="x")]
                ),
                metadata=(("authorization", f"Bearer {key}"), ("x-forwarded-for", "203.0.113.7")),
                timeout=10,
            )
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(raised.value.trailing_metadata() or ())
    assert trailers["retry-after"] == "1000"
    assert trailers[EDGE_LIMIT_HEADER] == "per_client_ip"


@behind_a_proxy
async def test_a_bogus_key_flood_is_refused_before_authz(own_stack: Stack) -> None:
    """Only the address's budget of a flood reaches the authz service; the rest is refused by
    Envoy alone. Requests without any key have a smaller budget, on top of that one."""
    token = own_stack.environ[own_stack.config.control.admin_token_env]
    key = await create_demo_key(own_stack.config, token)
    async with httpx.AsyncClient(timeout=30) as client:
        gateway = Edge(own_stack, client)
        verdicts, handled = await gateway.authz_verdicts(), await gateway.checks_handled()

        flood = await gateway.chats(60, "sk-bogus-key", forwarded_for="198.51.100.1")
        assert statuses(flood) == {401: BURST, 429: 60 - BURST}
        assert_edge_refusal(next(a for a in flood if a.status_code == 429), "per_client_ip")

        keyless = await gateway.chats(8, None, forwarded_for="198.51.100.2")
        assert statuses(keyless) == {
            401: BURST_WITHOUT_CREDENTIAL,
            429: 8 - BURST_WITHOUT_CREDENTIAL,
        }
        refused = next(a for a in keyless if a.status_code == 429)
        assert_edge_refusal(refused, "per_client_ip_without_credential")
        # The same address with a key still has the rest of its own budget.
        with_key = await gateway.chats(BURST - BURST_WITHOUT_CREDENTIAL + 1, key, "198.51.100.2")
        assert statuses(with_key) == {200: BURST - BURST_WITHOUT_CREDENTIAL, 429: 1}

        reached = BURST + BURST_WITHOUT_CREDENTIAL + BURST - BURST_WITHOUT_CREDENTIAL
        assert await gateway.authz_verdicts() - verdicts == reached
        await eventually(
            gateway.checks_handled,
            lambda total: total - handled >= reached,
            what="the authz service's Check counter",
        )
        assert await gateway.checks_handled() - handled == reached


@facing_clients
async def test_without_trusted_hops_x_forwarded_for_is_ignored(own_stack: Stack) -> None:
    token = own_stack.environ[own_stack.config.control.admin_token_env]
    key = await create_demo_key(own_stack.config, token)
    async with httpx.AsyncClient(timeout=30) as client:
        gateway = Edge(own_stack, client)
        assert statuses(await gateway.chats(BURST, key, forwarded_for="203.0.113.7")) == {
            200: BURST
        }
        # Another X-Forwarded-For is the same client (the peer): its budget is spent.
        (spoofed,) = await gateway.chats(1, key, forwarded_for="203.0.113.8")
        assert_edge_refusal(spoofed, "per_client_ip")
        (plain,) = await gateway.chats(1, key)
        assert_edge_refusal(plain, "per_client_ip")
