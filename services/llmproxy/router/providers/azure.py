"""Azure OpenAI's deployment API: OpenAI's format under per-deployment paths.

A target's `model` names the deployment; the provider's `api_version` goes on every call, and
the key in Azure's `api-key` header. (Azure's newer v1 endpoint, `<resource>/openai/v1`, takes
OpenAI's own paths and bearer keys: configure it as kind `openai`.)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from llmproxy.router.providers.openai import OpenAIClient


class AzureOpenAIClient(OpenAIClient):
    """OpenAI's wire format at /openai/deployments/{deployment}/...?api-version=..."""

    def headers(self) -> dict[str, str]:
        """Azure's key header."""
        headers = {"content-type": "application/json"}
        if self.provider.api_key:
            headers["api-key"] = self.provider.api_key
        return headers

    def path(self, operation: str, body: dict[str, Any]) -> str:
        """The deployment's path for operation, with the api-version query."""
        # Quoted whole: a deployment name from the configuration must stay one path segment.
        deployment = quote(str(body.get("model", "")), safe="")
        version = quote(self.provider.api_version or "", safe="")
        return f"/openai/deployments/{deployment}/{operation}?api-version={version}"
