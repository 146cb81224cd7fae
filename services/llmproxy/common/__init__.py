"""Code every llmproxy service shares: configuration, server bootstrap, logging, metrics."""
