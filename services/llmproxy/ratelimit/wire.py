"""ShouldRateLimit's answer written as protobuf bytes from pieces prepared once per limit.

Every decision answers with one status per descriptor. Building them as upb messages costs
about twice as much Python as joining bytes, and this runs for every request Envoy sends, so
the common parts (overall code, statuses, the reservation header) are written here by hand
(field numbers from envoy/service/ratelimit/v3/rls.proto). The rare parts of a refusal (body,
Retry-After) stay messages: serialized messages concatenated are one merged message.
Unit tests compare every shape with the same answer built as messages.
"""

from __future__ import annotations

from envoy.service.ratelimit.v3 import rls_pb2

_Response = rls_pb2.RateLimitResponse
_Status = _Response.DescriptorStatus
OK_CODE = _Response.OK
OVER_LIMIT_CODE = _Response.OVER_LIMIT


def _number(message: type, field: str) -> int:
    return int(message.DESCRIPTOR.fields_by_name[field].number)  # type: ignore[attr-defined]


def _tag(number: int, wire_type: int) -> bytes:
    return bytes([number << 3 | wire_type])


_VARINT, _LENGTH = 0, 2
_OVERALL = _tag(_number(_Response, "overall_code"), _VARINT)
_STATUS = _tag(_number(_Response, "statuses"), _LENGTH)
_REQUEST_HEADER = _tag(_number(_Response, "request_headers_to_add"), _LENGTH)
_CODE = _tag(_number(_Status, "code"), _VARINT)
_LIMIT = _tag(_number(_Status, "current_limit"), _LENGTH)
_REMAINING = _tag(_number(_Status, "limit_remaining"), _VARINT)
_RESET = _tag(_number(_Status, "duration_until_reset"), _LENGTH)
_SECONDS, _NANOS = b"\x08", b"\x10"  # google.protobuf.Duration
_KEY, _VALUE = b"\x0a", b"\x12"  # envoy.config.core.v3.HeaderValue


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_encode_varint(n) for n in range(1 << 14)]  # two bytes at most: most lengths, counts


def varint(n: int) -> bytes:
    """n (>= 0) as a protobuf varint."""
    return _SMALL[n] if n < 16384 else _encode_varint(n)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


# A Duration of 0..999 ms has only nanos; the nanos of every millisecond, encoded once.
_MS_NANOS = [b""] + [_NANOS + _encode_varint(ms * 1_000_000) for ms in range(1, 1000)]


OVERALL_OK = _OVERALL + varint(OK_CODE)
OVERALL_OVER_LIMIT = _OVERALL + varint(OVER_LIMIT_CODE)
NO_LIMIT_STATUS = _field(_STATUS, _CODE + varint(OK_CODE))


class LimitStatuses:
    """The statuses of one limit: its current_limit and codes encoded once."""

    __slots__ = ("_ok", "_over", "unchecked")

    def __init__(self, limit: rls_pb2.RateLimitResponse.RateLimit) -> None:
        limit_field = _field(_LIMIT, limit.SerializeToString())
        self._ok = _CODE + varint(OK_CODE) + limit_field
        self._over = _CODE + varint(OVER_LIMIT_CODE) + limit_field
        # Not checked (another descriptor's cached refusal decided): code and limit only.
        self.unchecked = _field(_STATUS, self._ok)

    def status(self, over: bool, remaining: int, reset_ms: int) -> bytes:
        """One statuses entry with what the check found."""
        # _field and the Duration inlined: three of these per request.
        body = self._over if over else self._ok
        if remaining:
            body += _REMAINING + varint(remaining)
        seconds, rest = divmod(reset_ms, 1000)
        reset = (_SECONDS + varint(seconds) if seconds else b"") + _MS_NANOS[rest]
        body += _RESET + _SMALL[len(reset)] + reset
        return _STATUS + varint(len(body)) + body


def request_header(key: bytes, value: str) -> bytes:
    """A request_headers_to_add entry (key already encoded as a length-prefixed field)."""
    return _field(_REQUEST_HEADER, key + _field(_VALUE, value.encode()))


def header_key(key: str) -> bytes:
    """A header name encoded once, for request_header."""
    return _field(_KEY, key.encode())
