"""The router: answers OpenAI-style requests from the best available provider."""
