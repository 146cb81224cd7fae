"""Grafana dashboards and provisioning: well-formed, wired to the provisioned data source, and
every query valid PromQL (checked by promtool)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.promql import metric_names, with_grafana_variables

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def datasource_uids() -> set[str]:
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    return {d["uid"] for d in provisioned["datasources"] if d["type"] == "prometheus"}


def test_the_four_dashboards_exist() -> None:
    assert {p.stem for p in DASHBOARDS} == {"overview", "providers", "ratelimits", "cache"}


def test_dashboard_uids_are_unique() -> None:
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_queries_the_provisioned_prometheus(path: Path) -> None:
    dashboard = load(path)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in datasource_uids()
        # Some targets are reference lines (vector(0.005)); the panel as a whole reads metrics.
        read = set().union(*(metric_names(t["expr"]) for t in panel["targets"]))
        assert read, f"panel {panel['title']!r} reads no metric"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panels_do_not_overlap(path: Path) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in load(path)["panels"]:
        grid = panel["gridPos"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert grid["x"] + grid["w"] <= 24
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        taken |= cells


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_is_valid_promql(path: Path, tmp_path: Path) -> None:
    """promtool parses each query, as a recording rule of a throwaway rule file."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": with_grafana_variables(expr)}
        for i, expr in enumerate(queries(load(path)))
    ]
    rule_file = tmp_path / "queries.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}))
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_provisioning_loads_the_dashboards_folder() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/llmproxy.yml").read_text())
    (only,) = provider["providers"]
    assert only["type"] == "file"
    assert only["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up == 0", {"up"}),
        (
            'sum by (le) (rate(envoy_http_downstream_rq_time_bucket{a="b",c=~"d|e"}[5m]))',
            {"envoy_http_downstream_rq_time_bucket"},
        ),
        (
            "llmproxy:client_error_ratio:rate1h > (14.4 * 0.005) and on (x) foo_total offset 5m",
            {"llmproxy:client_error_ratio:rate1h", "foo_total"},
        ),
        (
            'histogram_quantile(0.99, sum(rate(x_bucket{l="sum(y)"}[$__rate_interval])))',
            {"x_bucket"},
        ),
        ("vector(1) + 1e3", set()),
    ],
)
def test_metric_names_are_found_in_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
