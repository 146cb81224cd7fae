"""The command line: it starts, reports its port, serves, and exits 0 on SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx


def test_cli_serves_and_stops_cleanly_on_sigterm() -> None:
    command = [sys.executable, "-m", "llmproxy.fakeprovider", "--port", "0", "--models", "m1,m2"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        ready = process.stderr.readline()
        found = re.search(r"ready on (http://\S+)", ready)
        assert found, ready
        models = httpx.get(f"{found.group(1)}/v1/models", timeout=5.0).json()
        assert [model["id"] for model in models["data"]] == ["m1", "m2"]

        process.send_signal(signal.SIGTERM)

        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_cli_rejects_an_out_of_range_knob() -> None:
    command = [sys.executable, "-m", "llmproxy.fakeprovider", "--error-rate", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    assert result.returncode == 2
    assert "error_rate" in result.stderr
