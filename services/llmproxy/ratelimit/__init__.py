"""The rate limit service: Envoy's external rate limit API backed by Redis."""
