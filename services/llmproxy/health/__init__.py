"""The provider health service: probes, circuit breakers, health Envoy and the router act on."""
