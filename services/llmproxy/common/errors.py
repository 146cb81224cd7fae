"""Exceptions shared by every service.

LlmproxyError
 └─ ConfigError: the configuration file or an environment override is invalid.
"""

from __future__ import annotations


class LlmproxyError(Exception):
    """Base of every error llmproxy raises on purpose."""


class ConfigError(LlmproxyError):
    """The configuration is invalid; the message names each offending field."""
