"""`python -m llmproxy.router`: run the router service until SIGTERM."""

from llmproxy.common.server import run_service
from llmproxy.router.server import serve

run_service("router", lambda config: config.services.router, serve)
