"""Stack configurations for tests: the shipped defaults, with every port free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmproxy.config import StackConfig, load_config
from llmproxy.devstack.freeports import with_free_ports


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
