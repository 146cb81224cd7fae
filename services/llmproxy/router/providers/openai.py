"""OpenAI-compatible providers (OpenAI, Azure's v1 endpoint, vLLM, Ollama, Groq, ...)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from llmproxy.router.providers import sse
from llmproxy.router.providers.base import HttpProvider


class OpenAIClient(HttpProvider):
    """Relays OpenAI's format unchanged, as whole SSE events when streaming."""

    def path(self, operation: str, body: dict[str, Any]) -> str:
        """The path of operation ("chat/completions" or "embeddings") under the base URL."""
        return f"/{operation}"

    async def chat(self, body: dict[str, Any]) -> bytes:
        """POST /chat/completions."""
        return await self.post(self.path("chat/completions", body), body)

    async def open_chat_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """POST /chat/completions with stream: true, always asking for the usage chunk."""
        options = body.get("stream_options")
        options = {**options} if isinstance(options, dict) else {}
        options["include_usage"] = True
        path = self.path("chat/completions", body)
        raw = await self.post_stream(path, {**body, "stream_options": options})
        return sse.events(raw)

    async def embeddings(self, body: dict[str, Any]) -> bytes:
        """POST /embeddings."""
        return await self.post(self.path("embeddings", body), body)
