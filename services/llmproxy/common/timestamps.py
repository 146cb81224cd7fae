"""Unix seconds to and from protobuf Timestamps and Durations, rounded to the nanosecond.

Rounding, not truncating: 0.3 s is 299999999.99… ns as a float, and a truncated value would
come back from the wire a nanosecond short.
"""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(seconds: float) -> Timestamp:
    """A Timestamp of Unix seconds."""
    value = Timestamp()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


def optional_timestamp(seconds: float | None) -> Timestamp | None:
    """A Timestamp of Unix seconds, or None for None (an unset message field)."""
    return None if seconds is None else timestamp(seconds)


def seconds(value: Timestamp | Duration) -> float:
    """Unix seconds of a Timestamp, or the seconds of a Duration."""
    return value.ToNanoseconds() / 1e9


def duration(seconds: float) -> Duration:
    """A Duration of seconds."""
    value = Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value
