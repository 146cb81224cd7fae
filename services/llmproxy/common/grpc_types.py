"""Type aliases for grpc.aio, whose generic classes every servicer would otherwise spell out."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
"""The context handed to every servicer method."""
