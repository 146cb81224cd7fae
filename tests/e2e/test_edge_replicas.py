"""Two Envoy replicas in front of one stack share the edge tier's buckets.

Each replica counts the Envoys connected to the health service's EDS (its local cluster) and
takes 1/N of every shared bucket: a request costs N tokens. With a per-address bucket of BURST
tokens that refills one token every 1000 s, the two replicas together admit exactly BURST
requests from one address, BURST/2 each, however the requests are split: the approximation is
that each replica's share is fixed, so an address sending only to one replica gets half.

The health service runs two instances, and each replica's EDS goes to a different one (its
health cluster lists that instance only): the instances share their Envoys through Redis, so
that both replicas count two.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import httpx
import pytest
import yaml

from llmproxy.common.contract import ENVOYS_CLUSTER
from llmproxy.common.net import free_port
from llmproxy.config import DEFAULT_CONFIG, StackConfig
from llmproxy.devstack.authz import create_demo_key
from llmproxy.devstack.freeports import with_free_ports
from llmproxy.devstack.stack import Stack
from llmproxy.envoyconf.edge import EDGE_LIMIT_HEADER
from tests.e2e.test_edge import CHAT, SLOW
from tests.harness import logs
from tests.harness.waiting import eventually

BURST = 10  # per client address, for the whole fleet
REPLICAS = ("envoy-a", "envoy-b")  # envoy-a's EDS goes to health instance 0, envoy-b's to 1


@pytest.fixture
def own_stack_data() -> dict[str, Any]:
    """The stack of this module: two health instances."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data.setdefault("services", {}).setdefault("health", {})["instances"] = 2
    return with_free_ports(data)


def _replica_config(config: StackConfig, health_instance: int, own_ports: bool) -> StackConfig:
    """config for an Envoy whose health cluster (and so its EDS) has health instance
    health_instance only; unless own_ports, with every Envoy port moved, for another Envoy on
    the same machine."""
    ports = {
        "listener_port": free_port(),
        "control_port": free_port(),
        "admin_port": free_port(),
        "egress_port": free_port(),
    }
    envoy = config.envoy if own_ports else config.envoy.model_copy(update=ports)
    health = config.services.health.instance(health_instance).model_copy(update={"instances": 1})
    return config.model_copy(
        update={"envoy": envoy, "services": config.services.model_copy(update={"health": health})}
    )


async def _connected(client: httpx.AsyncClient, config: StackConfig, instance: int) -> float:
    """The Envoys connected to one health instance, from its /metrics."""
    port = config.services.health.instance(instance).metrics_port
    text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    found = re.search(r'^llmproxy_health_envoy_replicas\{view="connected"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else -1.0


async def _members(client: httpx.AsyncClient, config: StackConfig) -> int:
    """The hosts of the local cluster as one Envoy's admin sees them."""
    envoy = config.envoy
    text = (await client.get(f"http://{envoy.host}:{envoy.admin_port}/clusters")).text
    return sum(
        1
        for line in text.splitlines()
        if line.startswith(f"{ENVOYS_CLUSTER}::") and "::health_flags::" in line
    )


async def _chats(
    client: httpx.AsyncClient, config: StackConfig, count: int, key: str, address: str
) -> Counter[str]:
    """count chats at once from address; the answers by status (and the bucket of a 429)."""
    url = f"http://{config.envoy.host}:{config.envoy.listener_port}/v1/chat/completions"
    headers = {"authorization": f"Bearer {key}", "x-forwarded-for": address}
    answers = [await client.post(url, json=CHAT, headers=headers) for _ in range(count)]
    return Counter(
        f"{a.status_code} {a.headers.get(EDGE_LIMIT_HEADER, '')}".strip() for a in answers
    )


@pytest.mark.parametrize(
    "own_stack",
    [
        {
            "envoy": {"ext_authz_timeout_s": 5},
            "edge": {
                "xff_num_trusted_hops": 1,
                "per_client_ip": {"rate_per_s": SLOW, "burst": BURST},
            },
        }
    ],
    indirect=True,
    ids=["burst=10"],
)
async def test_two_envoy_replicas_share_one_limit(
    own_stack: Stack, request: pytest.FixtureRequest
) -> None:
    token = own_stack.environ[own_stack.config.control.admin_token_env]
    key = await create_demo_key(own_stack.config, token)
    # The stack's own Envoy could reach either health instance: two replicas that each reach
    # one, a different one, replace it (the first on its ports: the router's egress is there).
    own_stack.processes.pop("envoy").stop()
    first = _replica_config(own_stack.config, 0, own_ports=True)
    second = _replica_config(own_stack.config, 1, own_ports=False)
    for name, config in zip(REPLICAS, (first, second), strict=True):
        await own_stack.add_envoy(name, config)
        logs.watch(request.node, own_stack.processes[name])
    async with httpx.AsyncClient(timeout=30) as client:
        for index in range(2):
            await eventually(
                lambda i=index: _connected(client, own_stack.config, i),  # type: ignore[misc]
                lambda connected: connected == 1,
                what=f"one Envoy on health instance {index}",
                timeout_s=20,
            )
        for config in (first, second):
            await eventually(
                lambda config=config: _members(client, config),  # type: ignore[misc]
                lambda members: members == 2,
                what="both Envoys see two replicas",
                timeout_s=20,
            )

        # Each replica holds half of the address's bucket: BURST requests to each admit
        # BURST / 2 there, BURST across the fleet.
        refused = "429 per_client_ip"
        for config in (first, second):
            answers = await _chats(client, config, BURST, key, "203.0.113.7")
            assert answers == {"200": BURST // 2, refused: BURST // 2}

        # Membership follows the Envoys: with the replica gone from the other health
        # instance, the first takes the whole bucket again (a new address gets all of it).
        own_stack.processes.pop(REPLICAS[1]).stop()
        await eventually(
            lambda: _members(client, first),
            lambda members: members == 1,
            what="the first Envoy sees one replica",
            timeout_s=20,
        )
        answers = await _chats(client, first, BURST + 1, key, "203.0.113.8")
        assert answers == {"200": BURST, refused: 1}
