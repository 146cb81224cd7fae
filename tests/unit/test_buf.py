"""buf lint and buf breaking on proto/, with proof that both can fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUF = str(Path(sys.executable).parent / "buf")


def buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BUF, *args], cwd=cwd, capture_output=True, text=True, check=False)


def copy_module(tmp_path: Path) -> Path:
    copy = tmp_path / "module"
    for name in ("proto", "third_party"):
        shutil.copytree(ROOT / name, copy / name)
    shutil.copy(ROOT / "buf.yaml", copy / "buf.yaml")
    return copy


def test_buf_lint_passes() -> None:
    done = buf("lint")
    assert done.returncode == 0, done.stdout + done.stderr


def test_buf_lint_catches_a_bad_name(tmp_path: Path) -> None:
    copy = copy_module(tmp_path)
    proto = copy / "proto" / "llmproxy" / "fault" / "v1" / "fault.proto"
    proto.write_text(proto.read_text() + "\nmessage bad_name {}\n")
    done = buf("lint", cwd=copy)
    assert done.returncode != 0
    assert "bad_name" in done.stdout


def test_buf_breaking_against_main() -> None:
    """No change on this branch breaks the API of main (the same commit on main itself)."""
    has_main = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "main"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    against = ".git#branch=main" if has_main.returncode == 0 else ".git#ref=HEAD"
    done = buf("breaking", "--against", against)
    assert done.returncode == 0, done.stdout + done.stderr


def test_buf_breaking_catches_a_removed_field(tmp_path: Path) -> None:
    copy = copy_module(tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    for args in (["init", "-q", "-b", "base"], ["add", "-A"], ["commit", "-qm", "base"]):
        subprocess.run([*git, *args], cwd=copy, check=True)
    proto = copy / "proto" / "llmproxy" / "router" / "v1" / "router.proto"
    proto.write_text(proto.read_text().replace("  string upstream_model = 2;\n", ""))
    done = buf("breaking", "--against", ".git#branch=base", cwd=copy)
    assert done.returncode != 0
    assert "upstream_model" in done.stdout
