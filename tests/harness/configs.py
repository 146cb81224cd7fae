"""Stack configurations for tests: the shipped defaults, with every port free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmproxy.common.contract import SERVICES
from llmproxy.config import DEFAULT_CONFIG, StackConfig, load_config
from llmproxy.devstack.freeports import with_free_ports
from tests.harness.ports import free_port_with_room


def stack_config_data(**overrides: Any) -> dict[str, Any]:
    """The shipped configuration with fresh free ports everywhere; overrides merge on top."""
    data = with_free_ports()
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


def two_limiters_data(limits_file: Path) -> dict[str, Any]:
    """The test configuration with two rate limiter instances on limits_file (ports 7 apart)."""
    data = stack_config_data()
    data["services"]["ratelimit"].update(
        instances=2,
        port_step=7,
        grpc_port=free_port_with_room(7),
        metrics_port=free_port_with_room(7),
        limits_file=str(limits_file),
    )
    return data


def scaled_out_data(instances: int) -> dict[str, Any]:
    """The shipped configuration with `instances` of every service, every port free."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    services = data.setdefault("services", {})
    for name in SERVICES:
        services.setdefault(name, {})["instances"] = instances
    return with_free_ports(data)
