"""docs/configuration.md lists every configuration field with its current default."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from tests.harness.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "configuration.md"


def _generator() -> ModuleType:
    return load_script("config_reference")


def test_the_configuration_page_shows_every_field_as_the_code_declares_it() -> None:
    generator = _generator()
    table = generator.render()
    assert table in PAGE.read_text(), (
        "docs/configuration.md is stale: "
        ".venv/bin/python scripts/config_reference.py --update docs/configuration.md"
    )
    assert "`services.router.cache.default_ttl_s` | 3600 |" in table
    assert "`models[].targets[].provider` | required |" in table
