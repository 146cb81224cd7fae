"""Configuration of the monitoring stack (Prometheus, Alertmanager), built from ours."""
