"""Exceptions shared by every service, and how a program exits on a configuration error.

LlmproxyError
 ├─ ConfigError: the configuration (file, environment override, limits file, secret) is invalid.
 └─ OpenAIError (common.openai_errors): an error answered to a client in OpenAI's format.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class LlmproxyError(Exception):
    """Base of every error llmproxy raises on purpose."""


class ConfigError(LlmproxyError):
    """The configuration is invalid; the message names each offending field."""


@contextlib.contextmanager
def exit_on_config_error(prog: str) -> Iterator[None]:
    """Turn a ConfigError raised inside into its message on stderr and exit status 2.

    Every entry point (services, launcher, generators, CLIs) reports a bad configuration this
    one way: a message naming what is wrong, never a traceback.
    """
    try:
        yield
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
