"""A grpc.aio ServicerContext stand-in for servicers called directly in unit tests."""

from __future__ import annotations

from typing import Any

import grpc


class Aborted(Exception):
    """What FakeContext.abort raises, like grpc.aio's AbortError."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class FakeContext:
    """The parts of a grpc.aio ServicerContext the servicers use."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"

    async def abort(self, code: grpc.StatusCode, details: str = "", *_: Any) -> None:
        raise Aborted(code, details)
