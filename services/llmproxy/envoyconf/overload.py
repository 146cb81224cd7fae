"""What Envoy does with more checks than the authz and rate limit services can answer in time.

Each check cluster has a circuit breaker: at most `max_requests` checks in flight from this
Envoy. A check beyond it fails at once instead of queueing behind the others until its
timeout, so the services spend their CPU on checks that can still finish in time, and the
refused request's client learns so at once. A check that fails (overflow, timeout, service
down) refuses its request when the filter fails closed: ext_authz always unless configured to
allow, the rate limiter when the limits file says so (ratelimit.py). Envoy answers such a request
with a 503 local reply, which the listener's local reply config turns into its API's error body
(local_replies.py); overload_reply_headers() adds `retry-after` to it, so clients and SDKs back
off and retry.
"""

from __future__ import annotations

from typing import Any

# A check refused for overload is worth retrying as soon as the burst has passed.
RETRY_AFTER_S = 1
UNAVAILABLE = 503


def check_circuit_breakers(max_requests: int) -> dict[str, Any]:
    """A check cluster's circuit breaker: at most max_requests checks in flight, none queued
    beyond them.

    Checks are retried only when their instance was lost (resilience.py), never after a timeout,
    so a retry is no overload; every check in flight on a dying instance may be retried at once,
    and the retries count against max_requests like any check.
    """
    return {
        "thresholds": [
            {
                "priority": "DEFAULT",
                "max_requests": max_requests,
                # HTTP/2: requests wait here only while the connection is being opened.
                "max_pending_requests": max_requests,
                "max_retries": max_requests,
            }
        ]
    }


# The response flag of each check's failure, and what the client is told failed.
_CHECK_FLAGS = {"UAEX": "authorization", "RLSE": "rate limit"}


def _status_is(status: int) -> dict[str, Any]:
    value = {"default_value": status, "runtime_key": "unused"}
    return {"status_code_filter": {"comparison": {"op": "EQ", "value": value}}}


def check_failure_mappers(body_format: dict[str, Any]) -> list[dict[str, Any]]:
    """Local reply mappers for a 503 because a check could not finish: a message saying so (the
    filters give none), in body_format, with retry-after. To be listed after the mapper that
    keeps the authz service's own denials (also flagged UAEX, with a 4xx)."""
    message = (
        "The {check} check of this request could not finish in time (the gateway is "
        f"overloaded or the check is unavailable). Please try again in {RETRY_AFTER_S}s."
    )
    return [
        {
            "filter": {
                "and_filter": {
                    "filters": [
                        {"response_flag_filter": {"flags": [flag]}},
                        _status_is(UNAVAILABLE),
                    ]
                }
            },
            "body": {"inline_string": message.format(check=check)},
            "body_format_override": body_format,
            **overload_reply_headers(UNAVAILABLE),
        }
        for flag, check in _CHECK_FLAGS.items()
    ]


def overload_reply_headers(status: int) -> dict[str, Any]:
    """The headers_to_add of the local reply mapper for status: retry-after on a 503."""
    if status != UNAVAILABLE:
        return {}
    return {
        "headers_to_add": [
            {
                "header": {"key": "retry-after", "value": str(RETRY_AFTER_S)},
                "append_action": "ADD_IF_ABSENT",
            }
        ]
    }
