"""The local alert receiver of `make up`: one readable line per alert Alertmanager sends."""

from __future__ import annotations

from llmproxy.devstack.alertlog import notification_lines

PAGE = {
    "receiver": "pager",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "ProviderDown", "provider": "demo", "severity": "critical"},
            "annotations": {"summary": "Provider demo is down (health probes fail)"},
        },
        {
            "status": "resolved",
            "labels": {"alertname": "ServiceDown", "service": "router"},
            "annotations": {},
        },
    ],
}
SLACK = {
    "channel": "#llmproxy-alerts",
    "attachments": [
        {"title": "[CRITICAL] ProviderDown", "text": "Provider demo is down\nsecond alert"}
    ],
}


def test_a_webhook_notification_is_a_line_per_alert() -> None:
    assert notification_lines("/pager", PAGE) == [
        "pager firing ProviderDown provider=demo severity=critical: "
        "Provider demo is down (health probes fail)",
        "pager resolved ServiceDown service=router: ",
    ]


def test_a_slack_notification_is_its_title_and_text_on_one_line() -> None:
    assert notification_lines("/slack", SLACK) == [
        "slack [CRITICAL] ProviderDown: Provider demo is down | second alert"
    ]


def test_anything_else_is_logged_as_it_came() -> None:
    assert notification_lines("/other", {"b": 1, "a": 2}) == ['other {"a": 2, "b": 1}']
    assert notification_lines("/", "not json") == ['webhook "not json"']
