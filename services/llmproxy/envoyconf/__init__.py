"""Envoy's configuration, generated from the stack configuration."""
