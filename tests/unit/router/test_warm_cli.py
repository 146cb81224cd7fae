"""`python -m llmproxy.router.warm`: a file it cannot read is a one-line usage error."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmproxy.router import warm


@pytest.mark.parametrize("name", ["missing.jsonl", "a-folder"])
def test_an_unreadable_file_exits_2_naming_it_without_a_traceback(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "a-folder").mkdir()
    path = tmp_path / name
    monkeypatch.setattr("sys.argv", ["warm", str(path), "--target", "127.0.0.1:1"])
    with pytest.raises(SystemExit) as exited:
        warm.main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m llmproxy.router.warm: cannot read {path}: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_without_a_token_it_exits_2_saying_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LLMPROXY_TOKEN", raising=False)
    monkeypatch.delenv("LLMPROXY_ADMIN_TOKEN", raising=False)
    path = tmp_path / "requests.jsonl"
    path.write_text("{}\n")
    monkeypatch.setattr("sys.argv", ["warm", str(path), "--target", "127.0.0.1:1"])
    with pytest.raises(SystemExit) as exited:
        warm.main()
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "python -m llmproxy.router.warm: set $LLMPROXY_TOKEN to a control token "
        "(or $LLMPROXY_ADMIN_TOKEN to the admin token)\n"
    )
