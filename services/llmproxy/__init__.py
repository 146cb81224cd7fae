"""llmproxy: an LLM gateway whose data plane is Envoy and whose control plane is Python gRPC."""
