"""`python -m llmproxy.authz`: run the authorization service until SIGTERM."""

import sys

from llmproxy.authz.errors import SecretConfigError
from llmproxy.authz.server import serve
from llmproxy.common.server import run_service

try:
    run_service("authz", lambda config: config.services.authz, serve)
except SecretConfigError as exc:
    # Like an invalid configuration: a clear message and exit status 2, not a traceback.
    print(f"llmproxy.authz: {exc}", file=sys.stderr)
    raise SystemExit(2) from exc
