"""Free loopback ports for servers that cannot bind port 0 themselves (Envoy, Redis)."""

from llmproxy.devstack.freeports import free_port

__all__ = ["free_port"]
