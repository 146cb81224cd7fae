"""What an end-to-end client needs: the gateway's URL and an API key it accepts."""

from __future__ import annotations

import pytest

from llmproxy.devstack.stack import Stack


@pytest.fixture(scope="session")
def client_api_key(stack: Stack) -> str:
    """The API key clients send through Envoy (any value is accepted until keys exist)."""
    return "sk-llmproxy-e2e"


@pytest.fixture
def gateway_url(stack_logs: Stack) -> str:
    """The OpenAI base URL through Envoy, e.g. http://127.0.0.1:8080/v1."""
    envoy = stack_logs.config.envoy
    return f"http://{envoy.host}:{envoy.listener_port}/v1"


@pytest.fixture
def auth_headers(client_api_key: str) -> dict[str, str]:
    """The headers the OpenAI SDK sends for client_api_key."""
    return {"authorization": f"Bearer {client_api_key}"}
