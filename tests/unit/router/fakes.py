"""Fakes of the router's Protocols: scripted provider clients, an in-memory cache and
response store, a gRPC context, and recording usage and reconciler stores."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from llmproxy.common.usage import Identity, Usage
from llmproxy.router.cache.store import CachedAnswer
from llmproxy.router.providers import Provider, ProviderCallError, sse
from llmproxy.router.providers.base import LEGACY_COMPLETIONS, UnsupportedError
from llmproxy.router.stored_responses import StoredResponse, StoreUnavailableError


def answer(text: str = "ok", prompt: int = 3, completion: int = 2) -> bytes:
    return json.dumps(
        {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
    ).encode()


def stream_events(words: Iterable[str] = ("a", "b")) -> list[bytes]:
    events = [sse.encode({"choices": [{"index": 0, "delta": {"content": w}}]}) for w in words]
    events.append(
        sse.encode({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    )
    return [*events, sse.DONE]


def text_answer(text: str = "ok", prompt: int = 3, completion: int = 2) -> bytes:
    """A legacy completion answer (text_completion JSON)."""
    return json.dumps(
        {
            "object": "text_completion",
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
    ).encode()


def text_stream_events(words: Iterable[str] = ("a", "b")) -> list[bytes]:
    """A legacy completion stream: text chunks, the usage chunk, [DONE]."""
    events = [
        sse.encode({"object": "text_completion", "choices": [{"index": 0, "text": w}]})
        for w in words
    ]
    events.append(
        sse.encode({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    )
    return [*events, sse.DONE]


class FakeClient:
    """A ProviderClient whose answers are scripted: bytes, errors, or delays.

    Its kind decides legacy completions as the real adapters do: openai and azure answer them,
    every other kind refuses with UnsupportedError before a script step is used.
    """

    def __init__(
        self,
        name: str,
        script: list[Any] | None = None,
        delay_s: float = 0,
        kind: str = "openai",
    ) -> None:
        self.provider = Provider(name, kind, f"http://{name}.invalid", None, 5.0)
        self.script = list(script or [])
        self.delay_s = delay_s
        self.calls: list[dict[str, Any]] = []
        self.operations: list[str] = []
        self.cancelled = 0
        self.called = asyncio.Event()
        self.was_cancelled = asyncio.Event()

    async def _act(self, body: dict[str, Any], default: bytes | None = None) -> Any:
        self.calls.append(body)
        self.called.set()
        step = self.script.pop(0) if self.script else (default or answer())
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            self.was_cancelled.set()
            raise
        if isinstance(step, Exception):
            raise step
        return step

    async def chat(self, body: dict[str, Any]) -> bytes:
        self.operations.append("chat")
        result: bytes = await self._act(body)
        return result

    async def embeddings(self, body: dict[str, Any]) -> bytes:
        self.operations.append("embeddings")
        result: bytes = await self._act(body)
        return result

    async def open_chat_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        self.operations.append("chat stream")
        step = await self._act(body)
        events = step if isinstance(step, list) else stream_events()
        return self._events(events)

    def _refuse_completions(self, body: dict[str, Any]) -> None:
        if self.provider.kind not in ("openai", "azure"):
            self.calls.append(body)
            raise UnsupportedError(
                f"provider {self.provider.name!r} has no {LEGACY_COMPLETIONS}",
                feature=LEGACY_COMPLETIONS,
            )

    async def completions(self, body: dict[str, Any]) -> bytes:
        self.operations.append("completions")
        self._refuse_completions(body)
        result: bytes = await self._act(body, text_answer())
        return result

    async def open_completions_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        self.operations.append("completions stream")
        self._refuse_completions(body)
        step = await self._act(body)
        events = step if isinstance(step, list) else text_stream_events()
        return self._events(events)

    async def _events(self, events: list[Any]) -> AsyncIterator[bytes]:
        for event in events:
            if isinstance(event, Exception):
                raise event
            if isinstance(event, float):
                await asyncio.sleep(event)  # a pause between events
                continue
            yield event


def failure(status: int, retry_after_s: float | None = None) -> ProviderCallError:
    retryable = status in (408, 429) or status >= 500
    return ProviderCallError(
        f"answered {status}",
        status=status,
        retryable=retryable,
        body=b'{"error": {"message": "upstream says no"}}',
        retry_after_s=retry_after_s,
    )


class MemoryCache:
    """A ResponseCache in a dict; `broken` makes every call behave as if Redis were down."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[CachedAnswer, int, tuple[str, ...]]] = {}
        self.stats: dict[str, dict[str, float]] = {}
        self.broken = False

    async def get(self, digest: str) -> CachedAnswer | None:
        if self.broken:
            return None
        found = self.entries.get(digest)
        return found[0] if found else None

    async def put(self, digest: str, answer: CachedAnswer, ttl_s: int, tags: Iterable[str]) -> bool:
        if self.broken:
            return False
        self.entries[digest] = (answer, ttl_s, tuple(tags))
        return True

    async def invalidate(
        self,
        digests: Iterable[str] = (),
        models: Iterable[str] = (),
        tags: Iterable[str] = (),
        everything: bool = False,
        tenants: Iterable[str] = (),
    ) -> int:
        doomed = {
            d
            for d, (a, _, t) in self.entries.items()
            if everything
            or d in set(digests)
            or a.model in set(models)
            or set(t) & set(tags)
            or (a.tenant and a.tenant in set(tenants))
        }
        for digest in doomed:
            del self.entries[digest]
        return len(doomed)

    async def add_stats(self, model: str, counters: dict[str, float]) -> None:
        mine = self.stats.setdefault(model, {})
        for name, value in counters.items():
            mine[name] = mine.get(name, 0) + value

    async def read_stats(self) -> dict[str, dict[str, float]]:
        return self.stats


class Context:
    """A gRPC context that carries request headers and records the initial metadata sent."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.headers = headers or {}
        self.metadata: dict[str, str] = {}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple(self.headers.items())

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata.update(metadata)


class RecordingUsage:
    """A UsageStore that keeps every record and has spent nothing."""

    def __init__(self) -> None:
        self.records: list[tuple[Identity, str, Usage]] = []

    async def record(self, identity: Identity, model: str, usage: Usage) -> None:
        self.records.append((identity, model, usage))

    async def spend_usd(self, subject: str, name: str, period: str) -> float:
        return 0.0


class RecordingReconciler:
    """A TokenReconciler that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], int]] = []

    def reconcile_soon(self, headers: Any, actual_tokens: int) -> None:
        self.calls.append((dict(headers), actual_tokens))


class MemoryResponseStore:
    """A ResponseStore in a dict, with a clock for its TTLs and a switch that makes it fail."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[StoredResponse, float]] = {}  # id -> (stored, expiry)
        self.now = 0.0
        self.down = False
        self.ttls: list[int] = []

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailableError()

    async def get(self, response_id: str) -> StoredResponse | None:
        self._check()
        found = self.entries.get(response_id)
        return found[0] if found is not None and found[1] > self.now else None

    async def put(self, stored: StoredResponse, ttl_s: int) -> None:
        self._check()
        self.ttls.append(ttl_s)
        self.entries[stored.id] = (stored, self.now + ttl_s)

    async def delete(self, response_id: str) -> bool:
        self._check()
        return self.entries.pop(response_id, None) is not None
