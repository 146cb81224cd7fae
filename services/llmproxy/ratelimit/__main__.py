"""`python -m llmproxy.ratelimit`: run the rate limit service until SIGTERM."""

from llmproxy.common.server import run_service
from llmproxy.ratelimit.server import serve

run_service("ratelimit", lambda config: config.services.ratelimit, serve)
