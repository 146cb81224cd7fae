"""OpenAI-compatible providers (OpenAI, Azure's v1 endpoint, vLLM, Ollama, Groq, ...)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from llmproxy.router.providers import sse
from llmproxy.router.providers.base import HttpProvider


class OpenAIClient(HttpProvider):
    """Relays OpenAI's format unchanged, as whole SSE events when streaming."""

    def path(self, operation: str, body: dict[str, Any]) -> str:
        """The path of operation ("chat/completions", "completions" or "embeddings") under the
        base URL."""
        return f"/{operation}"

    async def chat(self, body: dict[str, Any]) -> bytes:
        """POST /chat/completions."""
        return await self.post(self.path("chat/completions", body), body)

    async def open_chat_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """POST /chat/completions with stream: true, always asking for the usage chunk."""
        return await self._open_stream("chat/completions", body)

    async def _open_stream(self, operation: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
        options = body.get("stream_options")
        options = {**options} if isinstance(options, dict) else {}
        options["include_usage"] = True
        path = self.path(operation, body)
        raw = await self.post_stream(path, {**body, "stream_options": options})
        return sse.events(raw)

    async def completions(self, body: dict[str, Any]) -> bytes:
        """POST /completions (legacy text completions)."""
        return await self.post(self.path("completions", body), body)

    async def open_completions_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """POST /completions with stream: true, always asking for the usage chunk."""
        return await self._open_stream("completions", body)

    async def embeddings(self, body: dict[str, Any]) -> bytes:
        """POST /embeddings."""
        return await self.post(self.path("embeddings", body), body)
