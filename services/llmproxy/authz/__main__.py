"""`python -m llmproxy.authz`: run the authorization service until SIGTERM."""

from llmproxy.authz.server import serve
from llmproxy.common.server import run_service

run_service("authz", lambda config: config.services.authz, serve)
