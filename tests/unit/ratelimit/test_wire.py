"""The hand-written answer bytes parse to exactly the messages upb would build."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.duration_pb2 import Duration

from llmproxy.ratelimit import wire

Response = rls_pb2.RateLimitResponse
LIMIT = Response.RateLimit(name="per-key", requests_per_unit=60, unit=Response.RateLimit.MINUTE)


def duration(ms: int) -> Duration:
    return Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


@pytest.mark.parametrize("n", [0, 1, 127, 128, 16383, 16384, 2**32 - 1, 2**40])
def test_varints_match_protobuf(n: int) -> None:
    encoded = Response.DescriptorStatus(limit_remaining=n % 2**32).SerializeToString()
    if n % 2**32:
        assert wire.varint(n % 2**32) == encoded[1:]
    assert Duration.FromString(b"\x08" + wire.varint(n)).seconds == n


@pytest.mark.parametrize(
    ("over", "remaining", "reset_ms"),
    [
        (False, 59, 59_999),
        (True, 0, 61_000),
        (False, 0, 0),
        (False, 2**32 - 1, 86_400_000),
        (True, 3, 1),
        (False, 16_383, 999),  # the largest remaining of the two-byte table, then the next
        (False, 16_384, 1_000),
    ],
)
@pytest.mark.parametrize("name", ["", "n" * 300])  # a long name: a multi-byte status length
def test_a_status_is_the_message_upb_builds(
    over: bool, remaining: int, reset_ms: int, name: str
) -> None:
    limit = Response.RateLimit(name=name, requests_per_unit=60, unit=Response.RateLimit.MINUTE)
    statuses = wire.LimitStatuses(limit)
    built = Response(
        statuses=[
            Response.DescriptorStatus(
                code=Response.OVER_LIMIT if over else Response.OK,
                current_limit=limit,
                limit_remaining=remaining,
                duration_until_reset=duration(reset_ms),
            )
        ]
    )
    encoded = statuses.status(over, remaining, reset_ms)
    assert encoded == built.SerializeToString()  # byte for byte, fields in upb's order
    ours = Response.FromString(encoded)
    assert ours == built
    assert ours.statuses[0].HasField("duration_until_reset")


def test_a_whole_answer_merges_hand_written_and_message_parts() -> None:
    statuses = wire.LimitStatuses(LIMIT)
    refusal = Response(
        raw_body=b"Rate limit reached",
        response_headers_to_add=[base_pb2.HeaderValue(key="retry-after", value="7")],
    ).SerializeToString()
    data = b"".join(
        [
            wire.OVERALL_OVER_LIMIT,
            wire.NO_LIMIT_STATUS,
            statuses.unchecked,
            statuses.status(True, 0, 6_500),
            wire.request_header(wire.header_key("x-a"), "1700000000000"),
            refusal,
        ]
    )
    assert Response.FromString(data) == Response(
        overall_code=Response.OVER_LIMIT,
        statuses=[
            Response.DescriptorStatus(code=Response.OK),
            Response.DescriptorStatus(code=Response.OK, current_limit=LIMIT),
            Response.DescriptorStatus(
                code=Response.OVER_LIMIT, current_limit=LIMIT, duration_until_reset=duration(6_500)
            ),
        ],
        request_headers_to_add=[base_pb2.HeaderValue(key="x-a", value="1700000000000")],
        raw_body=b"Rate limit reached",
        response_headers_to_add=[base_pb2.HeaderValue(key="retry-after", value="7")],
    )
    assert Response.FromString(wire.OVERALL_OK).overall_code == Response.OK
