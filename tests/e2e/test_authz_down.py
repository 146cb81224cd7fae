"""Envoy fails closed when the authorization service is down: 503 JSON, nothing reaches the
router. Its own stack, since the test stops a service."""

from __future__ import annotations

import httpx

from llmproxy.devstack.authz import create_demo_key
from llmproxy.devstack.stack import Stack
from tests.harness.waiting import eventually

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_requests_fail_closed_with_503_when_authz_is_stopped(own_stack: Stack) -> None:
    token = own_stack.environ[own_stack.config.control.admin_token_env]
    key = await create_demo_key(own_stack.config, token)
    envoy = own_stack.config.envoy
    url = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.post(url, json=BODY, headers=headers)).status_code == 200
        assert own_stack.processes["authz"].stop() == 0
        response = await eventually(
            lambda: client.post(url, json=BODY, headers=headers),
            lambda found: found.status_code != 200,
            what="a request refused without authz",
        )
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["type"] == "service_unavailable"
    router_log = (own_stack.workdir / "logs" / "router.log").read_text()
    assert "stream broke" not in router_log
