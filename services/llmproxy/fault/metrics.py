"""Prometheus metrics of the fault service (alert rules elsewhere use these exact names)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

FAULT_KINDS = (
    "latency",
    "abort",
    "bandwidth",
    "cpu",
    "memory",
    "kill_instance",
    "redis_unavailable",
)
ROLLBACK_REASONS = ("success_ratio", "latency_p99", "agent_error")

EXPERIMENTS_ACTIVE = Gauge(
    "llmproxy_fault_experiments_active", "Experiments whose faults are being applied now."
)
FAULTS_APPLIED = Counter(
    "llmproxy_fault_faults_applied_total", "Faults applied by experiment runs, by kind.", ["kind"]
)
ROLLBACKS = Counter(
    "llmproxy_fault_rollbacks_total", "Experiments rolled back automatically, by why.", ["reason"]
)
EMERGENCY_STOPS = Counter("llmproxy_fault_emergency_stops_total", "EmergencyStop calls.")
RTDS_NACKS = Counter("llmproxy_fault_rtds_nacks_total", "Runtime resources Envoy rejected (NACKs).")
LEADER = Gauge("llmproxy_fault_leader", "1 while this fault instance holds the leader lease.")
LEADER_TERMS = Counter(
    "llmproxy_fault_leader_terms_total", "Times this fault instance became the leader."
)
RTDS_PUSHES = Counter("llmproxy_fault_rtds_pushes_total", "Runtime responses sent to Envoy.")

for _kind in FAULT_KINDS:
    FAULTS_APPLIED.labels(_kind)
for _reason in ROLLBACK_REASONS:
    ROLLBACKS.labels(_reason)
