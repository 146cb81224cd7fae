"""docs/security.md says who may call each RPC as the access rules of the protos do."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from llmproxy.common.access import OTHER_SERVICES, our_rpcs, path_of
from tests.harness.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "security.md"


def _generator() -> ModuleType:
    return load_script("access_reference")


def test_the_security_page_shows_who_may_call_every_rpc_as_the_rules_say() -> None:
    generator = _generator()
    table = generator.render()
    assert table in PAGE.read_text(), (
        "docs/security.md is stale: "
        ".venv/bin/python scripts/access_reference.py --update docs/security.md"
    )
    assert "| `FaultService/EmergencyStop` | operator |  | yes |" in table
    assert "| `AuthzService/CreateControlToken` | admin |  | yes |" in table
    assert "| `ProviderHealthService/ReportOutcomes` | no person | yes | yes |" in table
    assert "| `ChatService/Chat` | open |  |  |" in table
    assert "(no rule)" not in table


def test_the_table_has_a_row_for_every_rpc_and_every_other_service() -> None:
    generator = _generator()
    methods = [path_of(m) for m in our_rpcs()]
    assert "/llmproxy.fault.v1.ChaosAgentService/ApplyStress" in methods
    rows = [line for line in generator.render().splitlines() if line.startswith("| `")]
    assert len(rows) == len(methods) + len(OTHER_SERVICES)
