"""Stack configurations for tests: the shipped defaults, with every port free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmproxy.config import DEFAULT_CONFIG, StackConfig, load_config
from tests.harness.ports import free_port

SERVICES = ("router", "ratelimit", "authz", "health", "fault")


def stack_config_data(**overrides: Any) -> dict[str, Any]:
    """The shipped configuration with fresh free ports everywhere; overrides merge on top."""
    data: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["envoy"].update(
        listener_port=free_port(),
        control_port=free_port(),
        admin_port=free_port(),
        egress_port=free_port(),
    )
    data["redis"]["url"] = f"redis://127.0.0.1:{free_port()}/0"
    data["fake_provider"]["port"] = free_port()
    for name in SERVICES:
        data["services"][name].update(grpc_port=free_port(), metrics_port=free_port())
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return data


def write_config(directory: Path, data: dict[str, Any]) -> tuple[Path, StackConfig]:
    """Write data as llmproxy.yaml in directory; returns the path and the validated config."""
    path = directory / "llmproxy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, load_config(path, environ={})
