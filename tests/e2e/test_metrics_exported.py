"""Every metric an alert rule or a Grafana panel reads is exported by the running stack.

The session stack's services' /metrics and Envoy's /stats/prometheus are scraped after a client
request has gone through (Envoy creates most of its stats on first use and merges histograms
every few seconds). A labelled prometheus-client metric with no samples yet still announces
itself with `# TYPE`, so names are taken from the TYPE lines as well as from the samples.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from llmproxy.devstack.stack import Stack
from llmproxy.obsconf.prometheus import RULES_DIR, service_targets
from tests.harness.promql import metric_names
from tests.harness.waiting import eventually

DASHBOARDS_DIR = RULES_DIR.parents[1] / "grafana" / "dashboards"
# Made by Prometheus itself for every target, not exported by anyone.
SYNTHETIC = {"up"}
_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", re.MULTILINE)
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def exported_names(text: str) -> set[str]:
    """Metric names in a Prometheus text exposition, histograms expanded to their series."""
    names = set(_SAMPLE.findall(text))
    for name, kind in _TYPE.findall(text):
        names.add(name)
        if kind in ("histogram", "summary"):
            names.update(name + suffix for suffix in _HISTOGRAM_SERIES)
    return names


def _rules() -> list[dict[str, str]]:
    return [
        rule
        for path in sorted(RULES_DIR.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def used_names() -> dict[str, set[str]]:
    """Metric name -> where it is used (rule or dashboard panel), recording rules left out."""
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    used: dict[str, set[str]] = {}
    for rule in _rules():
        where = f"rule {rule.get('alert') or rule.get('record')}"
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(where)
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                for name in metric_names(target["expr"]):
                    used.setdefault(name, set()).add(f"{path.stem}: {panel['title']}")
    return {n: w for n, w in used.items() if n not in recorded and n not in SYNTHETIC}


async def scrape_all(stack: Stack) -> str:
    """The concatenated expositions of every service instance and of Envoy."""
    envoy = stack.config.envoy
    urls = [
        f"http://{target}/metrics"
        for targets in service_targets(stack.config).values()
        for target in targets
    ]
    urls.append(f"http://{envoy.host}:{envoy.admin_port}/stats/prometheus")
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        replies = [await client.get(url) for url in urls]
    for reply in replies:
        reply.raise_for_status()
    return "\n".join(reply.text for reply in replies)


async def _chat(gateway_url: str, auth_headers: dict[str, str]) -> httpx.Response:
    # A new prompt each time: a cache hit would call no provider and count no usage.
    content = f"metrics {uuid.uuid4()}"
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        return await client.post(
            f"{gateway_url}/chat/completions",
            headers=auth_headers,
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]},
        )


async def test_every_metric_rules_and_dashboards_use_is_exported(
    stack_logs: Stack, gateway_url: str, auth_headers: dict[str, str]
) -> None:
    assert (await _chat(gateway_url, auth_headers)).status_code == 200
    used = used_names()
    assert "envoy_http_downstream_rq_xx" in used  # the extraction found the SLO's metric

    def missing(text: str) -> dict[str, list[str]]:
        have = exported_names(text)
        return {name: sorted(where) for name, where in used.items() if name not in have}

    async def probe() -> dict[str, list[str]]:
        return missing(await scrape_all(stack_logs))

    # Envoy merges histograms every 5 s (stats flush): wait for it rather than sleep.
    await eventually(probe, lambda gone: not gone, timeout_s=20)


async def test_tokens_and_spend_are_counted_per_tenant_and_model(
    stack_logs: Stack, gateway_url: str, auth_headers: dict[str, str]
) -> None:
    router = stack_logs.config.services.router
    url = f"http://{router.host}:{router.metrics_port}/metrics"

    async def prompt_tokens() -> float:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            text = (await client.get(url)).text
        wanted = {"tenant": "e2e", "model": "gpt-4o-mini", "kind": "prompt"}
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "llmproxy_usage_tokens_total" and sample.labels == wanted
        )

    before = await prompt_tokens()
    reply = await _chat(gateway_url, auth_headers)
    assert reply.status_code == 200
    used = reply.json()["usage"]["prompt_tokens"]
    assert used > 0
    # Usage is counted after the client's answer is complete: poll for it.
    await eventually(prompt_tokens, lambda now: now == before + used, timeout_s=10)


def test_exported_names_expand_histograms() -> None:
    text = "# HELP x_seconds t\n# TYPE x_seconds histogram\n# TYPE y_total counter\nz 1\n"
    assert exported_names(text) == {
        "x_seconds",
        "x_seconds_bucket",
        "x_seconds_sum",
        "x_seconds_count",
        "y_total",
        "z",
    }


def test_the_used_names_come_from_the_committed_files() -> None:
    assert Path(DASHBOARDS_DIR).is_dir()
    assert "llmproxy_health_provider_state" in used_names()
