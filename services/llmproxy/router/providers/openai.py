"""OpenAI-compatible providers (OpenAI, Azure-style gateways, vLLM, Ollama, Groq, ...)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from llmproxy.router.providers import sse
from llmproxy.router.providers.base import HttpProvider


class OpenAIClient(HttpProvider):
    """Relays OpenAI's format unchanged, as whole SSE events when streaming."""

    async def chat(self, body: dict[str, Any]) -> bytes:
        """POST /chat/completions."""
        return await self.post("/chat/completions", body)

    async def open_chat_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """POST /chat/completions with stream: true, always asking for the usage chunk."""
        options = body.get("stream_options")
        options = {**options} if isinstance(options, dict) else {}
        options["include_usage"] = True
        raw = await self.post_stream("/chat/completions", {**body, "stream_options": options})
        return sse.events(raw)

    async def embeddings(self, body: dict[str, Any]) -> bytes:
        """POST /embeddings."""
        return await self.post("/embeddings", body)
