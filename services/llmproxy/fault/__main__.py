"""`python -m llmproxy.fault`: run the fault service until SIGTERM."""

from llmproxy.common.server import run_service
from llmproxy.fault.server import serve

run_service("fault", lambda config: config.services.fault, serve)
