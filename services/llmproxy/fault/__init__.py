"""The fault service: chaos experiments that Envoy applies through RTDS."""
