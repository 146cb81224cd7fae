"""A fake LLM provider: OpenAI- and Anthropic-shaped HTTP API with deterministic answers.

Tests use it in place of a real provider, and the gateway embeds it as the demo
provider when no real provider keys are configured. Faults (latency, error rate,
outages) are set through `Knobs`, at start-up or at run time via ``PUT /_fake/knobs``.
"""
