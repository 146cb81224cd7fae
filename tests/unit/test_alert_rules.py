"""Prometheus's configuration and alert rules, checked and unit-tested by the real promtool.

Every alert in deploy/prometheus/rules must have a promtool test case that fires it, labels a
route exists for, a summary, and a section of deploy/RUNBOOK.md its runbook_url points at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmproxy.config import DEFAULT_CONFIG, load_config
from llmproxy.obsconf.__main__ import render
from llmproxy.obsconf.prometheus import (
    COMMITTED_CONFIG,
    COMPOSE_CONFIG,
    PROMETHEUS_DIR,
    RULES_DIR,
    PrometheusOptions,
    build_prometheus_config,
)
from tests.harness.configs import stack_config_data, write_config

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
TESTS_DIR = PROMETHEUS_DIR / "tests"
RUNBOOK = PROMETHEUS_DIR.parent / "RUNBOOK.md"
SEVERITIES = {"critical", "warning", "info"}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, check=False, timeout=60
    )


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def fired_in_tests() -> set[str]:
    """Alert names some promtool test case expects to fire (non-empty exp_alerts)."""
    fired = set()
    for path in TESTS_DIR.glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    return fired


def runbook_anchors() -> set[str]:
    """GitHub-style anchors of RUNBOOK.md's headings."""
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}


def test_promtool_accepts_every_rule_file() -> None:
    assert rule_files(), f"no rule files in {RULES_DIR}"
    done = promtool("check", "rules", *rule_files())
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass() -> None:
    tests = sorted(TESTS_DIR.glob("*.yml"))
    assert tests, f"no promtool tests in {TESTS_DIR}"
    done = promtool("test", "rules", *tests)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The check above is real: a test expecting the wrong severity fails."""
    test = yaml.safe_load((TESTS_DIR / "providers_test.yml").read_text())
    test["rule_files"] = [str(RULES_DIR / "providers.yml")]
    check = test["tests"][0]["alert_rule_test"][1]
    check["exp_alerts"][0]["exp_labels"]["severity"] = "info"
    path = tmp_path / "wrong_test.yml"
    path.write_text(yaml.safe_dump(test))
    done = promtool("test", "rules", path)
    assert done.returncode != 0
    assert "FAILED" in done.stdout + done.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text("groups: [{name: x, rules: [{alert: Broken, expr: 'sum(rate(x[5m])'}]}]\n")
    done = promtool("check", "rules", path)
    assert done.returncode != 0
    assert "Broken" in done.stdout + done.stderr or "parse error" in done.stdout + done.stderr


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: str(r["alert"]))
def test_every_alert_fires_in_a_promtool_test(rule: dict[str, Any]) -> None:
    assert rule["alert"] in fired_in_tests(), f"no promtool test case fires {rule['alert']}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: str(r["alert"]))
def test_every_alert_has_severity_summary_and_a_runbook_section(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"]
    path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
    assert path == "deploy/RUNBOOK.md"
    assert anchor == rule["alert"].lower()
    assert anchor in runbook_anchors(), f"RUNBOOK.md has no section {rule['alert']}"


def test_alert_names_are_unique() -> None:
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names))


def test_the_committed_prometheus_config_is_fresh() -> None:
    """deploy/prometheus/prometheus.yml is generated: `python -m llmproxy.obsconf` rewrites it."""
    expected = render(build_prometheus_config(load_config(DEFAULT_CONFIG, environ={})))
    assert COMMITTED_CONFIG.read_text() == expected, "run: .venv/bin/python -m llmproxy.obsconf"


@pytest.mark.parametrize("path", [COMMITTED_CONFIG, COMPOSE_CONFIG], ids=lambda p: p.name)
def test_promtool_accepts_the_committed_configs(path: Path) -> None:
    done = promtool("check", "config", path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_test_stacks_config_scrapes_its_ports(tmp_path: Path) -> None:
    data = stack_config_data()
    data["services"]["ratelimit"]["instances"] = 2
    _, config = write_config(tmp_path, data)
    options = PrometheusOptions(
        scrape_interval_s=1,
        evaluation_interval_s=0.5,
        rule_files=[str(p) for p in rule_files()],
        alertmanagers=["127.0.0.1:1"],
    )
    built = build_prometheus_config(config, options)
    jobs = {job["job_name"]: job for job in built["scrape_configs"]}
    ratelimit = config.services.ratelimit
    assert jobs["ratelimit"]["static_configs"][0]["targets"] == [
        f"127.0.0.1:{ratelimit.metrics_port}",
        f"127.0.0.1:{ratelimit.instance(1).metrics_port}",
    ]
    assert jobs["router"]["static_configs"][0]["targets"] == [
        f"127.0.0.1:{config.services.router.metrics_port}"
    ]
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    assert jobs["envoy"]["static_configs"][0]["targets"] == [f"127.0.0.1:{config.envoy.admin_port}"]
    assert built["global"]["scrape_interval"] == "1s"
    assert built["global"]["evaluation_interval"] == "500ms"
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(built))
    done = promtool("check", "config", path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("interval", [0, -1, 0.0001])
def test_a_nonpositive_interval_is_refused(interval: float) -> None:
    config = load_config(DEFAULT_CONFIG, environ={})
    with pytest.raises(ValueError, match="interval must be positive"):
        build_prometheus_config(config, PrometheusOptions(scrape_interval_s=interval))


def run_generator(
    tmp_path: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """`python -m llmproxy.obsconf` writing into tmp_path: its result and the two outputs."""
    out, compose_out = tmp_path / "prometheus.yml", tmp_path / "prometheus.compose.yml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmproxy.obsconf",
            *args,
            "--out",
            str(out),
            "--compose-out",
            str(compose_out),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return done, out, compose_out


def test_the_generator_refuses_a_bad_configuration_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "llmproxy.yaml"
    bad.write_text("services:\n  router: {metrics_port: 70000}\n")
    done, out, compose_out = run_generator(tmp_path, "--config", str(bad))
    assert done.returncode == 2
    assert "services.router.metrics_port" in done.stderr
    assert not out.exists()
    assert not compose_out.exists()


def test_the_generator_writes_both_configs(tmp_path: Path) -> None:
    done, out, compose_out = run_generator(tmp_path)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == COMMITTED_CONFIG.read_text()
    assert compose_out.read_text() == COMPOSE_CONFIG.read_text()
