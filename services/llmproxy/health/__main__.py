"""`python -m llmproxy.health`: run the provider health service until SIGTERM."""

from llmproxy.common.server import run_service
from llmproxy.health.server import serve

run_service("health", lambda config: config.services.health, serve)
