"""Free loopback ports, for stacks that must not collide with anything else running here
(the test suite, benchmarks, a second `make up`)."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from llmproxy.common.contract import SERVICES
from llmproxy.common.net import free_port, free_port_block
from llmproxy.config import DEFAULT_CONFIG


def with_free_ports(data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of config data (default: the shipped file) with every port free and a Redis of
    its own on a free port."""
    data = copy.deepcopy(data) if data is not None else yaml.safe_load(DEFAULT_CONFIG.read_text())
    data.setdefault("envoy", {}).update(
        listener_port=free_port(),
        control_port=free_port(),
        admin_port=free_port(),
        egress_port=free_port(),
    )
    data.setdefault("redis", {})["url"] = f"redis://127.0.0.1:{free_port()}/0"
    cache = data.get("services", {}).get("router", {}).get("cache", {})
    if cache.get("redis_url"):
        cache["redis_url"] = f"redis://127.0.0.1:{free_port()}/0"
    data.setdefault("fake_provider", {})["port"] = free_port()
    services = data.setdefault("services", {})
    for name in SERVICES:
        service = services.setdefault(name, {})
        # Several instances take consecutive ports: a free block each, one port apart.
        count = int(service.get("instances", 1))
        if count > 1:
            service["port_step"] = 1
        service.update(grpc_port=free_port_block(count), metrics_port=free_port_block(count))
    return data
