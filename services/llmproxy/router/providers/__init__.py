"""Provider adapters: each speaks one provider API and answers in OpenAI's format."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx

from llmproxy.router.providers.anthropic import AnthropicClient
from llmproxy.router.providers.azure import AzureOpenAIClient
from llmproxy.router.providers.base import Provider, ProviderCallError, ProviderClient
from llmproxy.router.providers.bedrock import BedrockClient
from llmproxy.router.providers.gemini import GeminiClient
from llmproxy.router.providers.openai import OpenAIClient

__all__ = ["Provider", "ProviderCallError", "ProviderClient", "client_for"]

_Adapter = Callable[[httpx.AsyncBaseTransport, Provider], ProviderClient]

# One adapter per ProviderSettings.kind.
ADAPTERS: Mapping[str, _Adapter] = {
    "openai": OpenAIClient,
    "anthropic": AnthropicClient,
    "azure": AzureOpenAIClient,
    "gemini": GeminiClient,
    "bedrock": BedrockClient,
}


def client_for(transport: httpx.AsyncBaseTransport, provider: Provider) -> ProviderClient:
    """The adapter for provider's API kind, sending through transport."""
    return ADAPTERS[provider.kind](transport, provider)
