"""Free loopback ports for servers that cannot bind port 0 themselves (Envoy, Redis)."""

from llmproxy.common.net import free_port

__all__ = ["free_port"]
