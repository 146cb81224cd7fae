"""Provider adapters: each speaks one provider API and answers in OpenAI's format."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from llmproxy.router.providers.anthropic import AnthropicClient
from llmproxy.router.providers.base import Provider, ProviderCallError, ProviderClient
from llmproxy.router.providers.bedrock import BedrockClient
from llmproxy.router.providers.openai import OpenAIClient

__all__ = ["Provider", "ProviderCallError", "ProviderClient", "client_for"]


def client_for(transport: httpx.AsyncBaseTransport, provider: Provider) -> ProviderClient:
    """The adapter for provider's API kind, sending through transport."""
    kinds: Mapping[str, type[OpenAIClient | AnthropicClient | BedrockClient]] = {
        "openai": OpenAIClient,
        "anthropic": AnthropicClient,
        "bedrock": BedrockClient,
    }
    return kinds[provider.kind](transport, provider)
