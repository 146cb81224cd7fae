"""A whole stack whose one model fails over across several fake providers, each its own process."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llmproxy.common.net import free_port_block
from llmproxy.config import FakeProviderSettings
from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.stack import Stack, fake_provider_process
from tests.harness.configs import stack_config_data, write_config
from tests.harness.ports import free_port

MODEL = "m"


@dataclass(frozen=True)
class ProvidersStack:
    """The stack, and each fake provider's process and port by provider name."""

    stack: Stack
    fakes: dict[str, ManagedProcess]
    ports: dict[str, int]


@contextmanager
def providers_stack(
    workdir: Path,
    providers: Sequence[str],
    timeout_s: float = 30.0,
    instances: Mapping[str, int] | None = None,
) -> Iterator[ProvidersStack]:
    """Start a fake provider per name and a stack whose model MODEL targets them in order;
    instances: how many processes of each service named (one of each otherwise)."""
    ports = {name: free_port() for name in providers}
    fakes = {
        name: fake_provider_process(
            FakeProviderSettings(port=ports[name]), ["fake-gpt"], workdir / f"{name}.log"
        )
        for name in providers
    }
    data = stack_config_data(
        providers=[
            {"name": n, "base_url": f"http://127.0.0.1:{ports[n]}/v1", "api_key_env": None}
            for n in providers
        ],
        models=[
            {"name": MODEL, "targets": [{"provider": n, "model": "fake-gpt"} for n in providers]}
        ],
    )
    for name, count in (instances or {}).items():
        data["services"][name].update(
            instances=count,
            port_step=1,
            grpc_port=free_port_block(count),
            metrics_port=free_port_block(count),
        )
    path, config = write_config(workdir, data)
    stack = Stack(config, path, workdir, os.environ)
    try:
        for fake in fakes.values():
            fake.start()
        for fake in fakes.values():
            asyncio.run(fake.wait_ready(20))
        asyncio.run(stack.start(timeout_s=timeout_s))
        yield ProvidersStack(stack, fakes, ports)
    finally:
        stack.stop()
        for fake in fakes.values():
            fake.stop()
