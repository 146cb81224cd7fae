"""The authorization service: Envoy's ext_authz check and the API key admin API."""
