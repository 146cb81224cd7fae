"""What one call costs: its tokens, and the prices of the target that answered it.

Providers bill prompt tokens read from their prompt cache at a discount (OpenAI's
`cached_tokens`, Anthropic's and Bedrock's cache reads, Gemini's cached content); the router's
adapters report that part of the prompt as OpenAI's `prompt_tokens_details.cached_tokens`, and
it is priced at the cached input price, the rest of the prompt at the input price.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Tokens(NamedTuple):
    """The tokens one call used, as its OpenAI-format usage reports them."""

    prompt: int
    """Every prompt token, those read from the provider's prompt cache included."""
    cached: int
    """The part of prompt the provider read from its prompt cache (0 to prompt)."""
    completion: int

    @property
    def total(self) -> int:
        """Prompt plus completion tokens (what token rate limits count)."""
        return self.prompt + self.completion


NO_TOKENS = Tokens(0, 0, 0)
"""The usage of an answer that reports none."""


@dataclass(frozen=True)
class Prices:
    """USD per million tokens of one target: prompt, completion, and cached prompt tokens."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float
    cached_input_usd_per_mtok: float

    def cost_usd(self, tokens: Tokens) -> float:
        """What a call with these tokens costs at these prices."""
        cached = min(max(tokens.cached, 0), max(tokens.prompt, 0))
        return (
            (tokens.prompt - cached) * self.input_usd_per_mtok
            + cached * self.cached_input_usd_per_mtok
            + tokens.completion * self.output_usd_per_mtok
        ) / 1_000_000
