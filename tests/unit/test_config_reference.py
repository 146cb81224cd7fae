"""docs/configuration.md lists every configuration field with its current default."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "configuration.md"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "scripts" / "config_reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_page_shows_every_field_as_the_code_declares_it() -> None:
    generator = _generator()
    table = generator.render()
    assert table in PAGE.read_text(), (
        "docs/configuration.md is stale: "
        ".venv/bin/python scripts/config_reference.py --update docs/configuration.md"
    )
    assert "`services.router.cache.default_ttl_s` | 3600 |" in table
    assert "`models[].targets[].provider` | required |" in table
