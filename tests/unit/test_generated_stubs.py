"""The committed stubs are exactly what `make proto` generates from proto/."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "services" / "llmproxy" / "_gen"


def differences(left: Path, right: Path) -> list[str]:
    comparison = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found = [*comparison.left_only, *comparison.right_only]
    found += [
        name
        for name in comparison.common_files
        if (left / name).read_bytes() != (right / name).read_bytes()
    ]
    for sub in comparison.common_dirs:
        found += [f"{sub}/{name}" for name in differences(left / sub, right / sub)]
    return found


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    out = tmp_path / "_gen"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    stale = differences(COMMITTED, out)
    assert not stale, f"stale generated stubs (run `make proto`): {stale}"


def test_a_changed_proto_is_detected(tmp_path: Path) -> None:
    """The comparison above can fail: a stub tree that differs by one file is reported."""
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(COMMITTED), str(copy)], check=True)
    (copy / "router" / "v1" / "router_pb2.py").write_text("# changed\n")
    assert differences(COMMITTED, copy) == ["router/v1/router_pb2.py"]
