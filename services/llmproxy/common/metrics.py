"""Prometheus metrics shared by every service: per-RPC counters and latency histograms."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from prometheus_client import Counter, Histogram, start_http_server

from llmproxy.common.grpc_types import Context
from llmproxy.common.interceptors import WrappingInterceptor, status_name

RPC_STARTED = Counter("llmproxy_grpc_server_started_total", "RPCs started.", ["service", "method"])
RPC_HANDLED = Counter(
    "llmproxy_grpc_server_handled_total",
    "RPCs completed, by gRPC status code.",
    ["service", "method", "code"],
)
RPC_SECONDS = Histogram(
    "llmproxy_grpc_server_handling_seconds",
    "Time to complete an RPC, streams included.",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


# Methods whose handlers count themselves (UnaryRpcMetrics): the interceptor leaves them alone.
_SELF_COUNTED: set[str] = set()


class UnaryRpcMetrics:
    """The llmproxy_grpc_server_* metrics of one unary method, counted by its own handler.

    Same names, labels and meaning as MetricsInterceptor's; for the hottest path (the rate
    limiter's ShouldRateLimit, thousands a second) the labels are resolved once and no wrapper
    coroutine runs per call.
    """

    def __init__(self, method: str) -> None:
        service, name = _split(method)
        self._labels = (service, name)
        self._started = RPC_STARTED.labels(service, name)
        self._seconds = RPC_SECONDS.labels(service, name)
        self._handled: dict[str, Any] = {}
        _SELF_COUNTED.add(method)

    def start(self) -> float:
        """Count a started RPC; returns its start time for done()."""
        self._started.inc()
        return time.perf_counter()

    def done(self, start: float, code: str) -> None:
        """Count the RPC handled with code (a grpc.StatusCode name) and time it."""
        self._seconds.observe(time.perf_counter() - start)
        handled = self._handled.get(code)
        if handled is None:
            handled = self._handled[code] = RPC_HANDLED.labels(*self._labels, code)
        handled.inc()


def start_metrics_server(host: str, port: int) -> int:
    """Serve /metrics on host:port in a background thread; returns the bound port."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_address[1])


def _split(method: str) -> tuple[str, str]:
    _, service, name = method.split("/", 2)
    return service, name


class MetricsInterceptor(WrappingInterceptor):
    """Counts and times every unary and server-streaming RPC the server handles."""

    def wrap_unary(self, behavior: Any, method: str) -> Any | None:
        return None if method in _SELF_COUNTED else _timed_unary(behavior, *_split(method))

    def wrap_stream(self, behavior: Any, method: str) -> Any | None:
        return None if method in _SELF_COUNTED else _timed_stream(behavior, *_split(method))


def _timed_unary(behavior: Any, service: str, name: str) -> Any:
    started, seconds = RPC_STARTED.labels(service, name), RPC_SECONDS.labels(service, name)

    async def wrapper(request: Any, context: Context) -> Any:
        started.inc()
        start = time.perf_counter()
        code = "UNKNOWN"
        try:
            response = await behavior(request, context)
        except grpc.aio.AbortError:
            code = status_name(context)
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        else:
            code = status_name(context)
            return response
        finally:
            seconds.observe(time.perf_counter() - start)
            RPC_HANDLED.labels(service, name, code).inc()

    return wrapper


def _timed_stream(behavior: Any, service: str, name: str) -> Any:
    # Label lookups once per method, not per call (the router's answers are all streams).
    started, seconds = RPC_STARTED.labels(service, name), RPC_SECONDS.labels(service, name)

    async def wrapper(request: Any, context: Context) -> AsyncIterator[Any]:
        started.inc()
        start = time.perf_counter()
        code = "UNKNOWN"
        try:
            result = behavior(request, context)
            if inspect.isawaitable(result):
                # A handler that writes with context.write() (grpc's own Health.Watch does).
                await result
            else:
                async for item in result:
                    yield item
            code = status_name(context)
        except grpc.aio.AbortError:
            code = status_name(context)
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            seconds.observe(time.perf_counter() - start)
            RPC_HANDLED.labels(service, name, code).inc()

    return wrapper
