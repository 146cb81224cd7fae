"""How Envoy absorbs the loss of one instance of a service: health checks, ejection, retries.

Every service cluster health-checks each instance every second (gRPC health protocol), so a
dead or draining instance leaves the rotation within about two seconds. Until then outlier
detection ejects it after the first failed connections, and the calls that failed on it are
retried on another instance, where a retry is safe:

- the ext_authz Check and the rate limiter's ShouldRateLimit, on a refused connection or
  stream, a reset, or UNAVAILABLE: a Check only reads; a ShouldRateLimit that reached the dead
  instance before it died may count twice, which errs on the side of the limit;
- a client request to the router, on a refused connection or stream or a reset only: Envoy
  retries only before it has sent response headers downstream (the client has seen nothing),
  and never on an answer of the router's (an UNAVAILABLE after its providers failed is final);
- a control call that does not change state (its access rule is not `mutating`), so re-asking
  another instance returns the same thing.

Ejection never takes more than half of a cluster's instances (max_ejection_percent), so a
fault every instance shares (Redis down) never empties the cluster.
"""

from __future__ import annotations

from typing import Any

from llmproxy.common.access import our_rpcs, path_of, rule_for

PREVIOUS_HOSTS = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
# Whatever the instance count, at most half of the instances are ejected: with two, one.
MAX_EJECTION_PERCENT = 50
# Failures before a request reached the instance, or the instance vanishing under it.
CONNECTION_FAILURES = "connect-failure,refused-stream,reset"


def service_health_check() -> dict[str, Any]:
    """The active gRPC health check of each instance: a dead one is out within ~2 intervals."""
    return {
        "timeout": "1s",
        "interval": "1s",
        # The same pace before a cluster has carried traffic (Envoy's default is 60 s): the
        # xDS clusters' first stream and a first control call must not pick a dead instance.
        "no_traffic_interval": "1s",
        "unhealthy_interval": "1s",
        "interval_jitter": "0.1s",
        # Two failures in a row: one slow answer on a busy machine does not remove an instance.
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
        "grpc_health_check": {},
    }


def outlier_detection(answers_for_others: bool) -> dict[str, Any]:
    """Ejection of an instance that fails calls, between two health checks.

    Connection failures and resets (local origin) eject after two in a row. answers_for_others
    is for the router, whose gRPC errors are mostly its providers' (an UNAVAILABLE after every
    provider failed): they say nothing about the instance, so only local-origin failures count.
    """
    enforce_status = 0 if answers_for_others else 100
    return {
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": 2,
        "enforcing_consecutive_local_origin_failure": 100,
        "consecutive_gateway_failure": 3,
        "enforcing_consecutive_gateway_failure": enforce_status,
        "consecutive_5xx": 5,
        "enforcing_consecutive_5xx": enforce_status,
        "interval": "1s",
        "base_ejection_time": "3s",
        "max_ejection_time": "30s",
        "max_ejection_percent": MAX_EJECTION_PERCENT,
    }


def _previous_hosts() -> dict[str, Any]:
    # A retry goes to another instance than the attempts before it.
    return {
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": f"type.googleapis.com/{PREVIOUS_HOSTS}"},
            }
        ],
        # Least-request picks two hosts at random and takes the less busy one, which is the one
        # that just failed (its calls are gone): with two hosts most draws pick it again.
        # Draws are cheap and happen only on a retry, so take enough to find the other one.
        "host_selection_retry_max_attempts": 20,
    }


def check_retry_policy(timeout_s: float) -> dict[str, Any]:
    """GrpcService.retry_policy of the ext_authz and rate limit calls (config.core.v3).

    One retry: another instance absorbs the loss of any one, and a fault every instance shares
    costs one extra call rather than several. The filter's timeout bounds all attempts.

    Envoy turns this policy into a route retry policy whose per-try timeout is the back-off's
    max_interval (envoyproxy/envoy#38847): it must be the check's whole timeout, or every
    attempt slower than the back-off cap fails (a burst then turns into 503s).
    """
    return {
        "retry_on": f"{CONNECTION_FAILURES},unavailable",
        "num_retries": 1,
        "retry_back_off": {"base_interval": "0.005s", "max_interval": f"{timeout_s}s"},
        **_previous_hosts(),
    }


def router_retry_policy() -> dict[str, Any]:
    """The client routes' retry policy (config.route.v3): the router never answered."""
    return {
        "retry_on": CONNECTION_FAILURES,
        "num_retries": 1,
        "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.1s"},
        **_previous_hosts(),
    }


def read_retry_policy() -> dict[str, Any]:
    """The retry policy of a control call that changes nothing (config.route.v3)."""
    return {
        "retry_on": f"{CONNECTION_FAILURES},unavailable",
        "num_retries": 2,
        "retry_back_off": {"base_interval": "0.05s", "max_interval": "0.5s"},
        **_previous_hosts(),
    }


def read_rpcs(package: str) -> list[str]:
    """The full method names of package's control RPCs that change nothing.

    Data-plane RPCs (open rules: chat completions and such) are not control calls: they are
    left out even though they do not count as mutating.
    """
    found = []
    for method in our_rpcs():
        if method.containing_service.file.package != package:
            continue
        rule = rule_for(path_of(method))
        if rule is not None and not rule.open and not rule.mutating:
            found.append(path_of(method))
    return found


def router_retry_budget() -> dict[str, Any]:
    """The router cluster's circuit breaker: as many retries in flight as requests.

    Retries happen only on connection failures and resets, never on a timeout or an answer, so
    they come from lost instances, not from overload; when a router dies, every request it held
    before answering is retried at once (Envoy's default allows three).
    """
    return {
        "thresholds": [
            {
                "priority": "DEFAULT",
                "retry_budget": {"budget_percent": {"value": 100.0}, "min_retry_concurrency": 16},
            }
        ]
    }
