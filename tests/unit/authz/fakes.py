"""In-memory fakes of the authz service's protocols, and a clock the tests move."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

from llmproxy.authz.errors import ConflictError
from llmproxy.authz.records import ControlTokenRecord, KeyRecord
from llmproxy.authz.store import index_member
from llmproxy.common.audit import AuditEntry
from llmproxy.common.usage import Identity, Period, Usage


class Clock:
    """A settable clock, in seconds."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeKeyStore:
    """KeyStore in dicts; counts lookups so tests can see the cache work."""

    def __init__(self) -> None:
        self.records: dict[str, KeyRecord] = {}
        self.audit: list[AuditEntry] = []
        self.invalidations: list[str] = []
        self.gets = 0
        self.fail_replaces = 0

    async def get(self, key_id: str) -> KeyRecord | None:
        self.gets += 1
        return self.records.get(key_id)

    async def create(self, record: KeyRecord) -> None:
        if record.key_id in self.records:
            raise ConflictError(record.key_id)
        self.records[record.key_id] = record

    async def replace(self, record: KeyRecord) -> bool:
        current = self.records.get(record.key_id)
        if self.fail_replaces:
            self.fail_replaces -= 1
            return False
        if current is None or current.version != record.version - 1:
            return False
        self.records[record.key_id] = record
        return True

    async def page(
        self, tenant: str | None, after: str | None, limit: int
    ) -> tuple[list[KeyRecord], str | None]:
        members = sorted(
            (index_member(r), r)
            for r in self.records.values()
            if tenant is None or r.tenant == tenant
        )
        rest = [(m, r) for m, r in members if after is None or m > after]
        page = rest[:limit]
        cursor = page[-1][0] if len(rest) > limit else None
        return [r for _, r in page], cursor

    async def publish_invalidation(self, key_id: str) -> None:
        self.invalidations.append(key_id)

    def add_audit(self, entry: AuditEntry) -> str:
        """What common.audit.AuditTrail does in Redis: the entry, with the next id."""
        entry_id = f"{len(self.audit) + 1}-0"
        self.audit.append(dataclasses.replace(entry, id=entry_id))
        return entry_id

    async def audit_page(self, before: str | None, limit: int) -> list[AuditEntry]:
        newest_first = list(reversed(self.audit))
        if before is not None:
            number = int(before.split("-")[0])
            newest_first = [e for e in newest_first if int(e.id.split("-")[0]) < number]
        return newest_first[:limit]


class FakeControlTokenStore:
    """ControlTokenStore in a dict; `broken` makes every call fail as a lost Redis would."""

    def __init__(self) -> None:
        self.records: dict[str, ControlTokenRecord] = {}
        self.fail_replaces = 0
        self.broken: Exception | None = None

    async def get(self, token_id: str) -> ControlTokenRecord | None:
        if self.broken is not None:
            raise self.broken
        return self.records.get(token_id)

    async def create(self, record: ControlTokenRecord) -> None:
        if self.broken is not None:
            raise self.broken
        if record.token_id in self.records:
            raise ConflictError(record.token_id)
        self.records[record.token_id] = record

    async def replace(self, record: ControlTokenRecord) -> bool:
        current = self.records.get(record.token_id)
        if self.fail_replaces:
            self.fail_replaces -= 1
            return False
        if current is None or current.version != record.version - 1:
            return False
        self.records[record.token_id] = record
        return True

    async def page(
        self, after: str | None, limit: int
    ) -> tuple[list[ControlTokenRecord], str | None]:
        members = sorted((index_member(r), r) for r in self.records.values())
        rest = [(m, r) for m, r in members if after is None or m > after]
        page = rest[:limit]
        cursor = page[-1][0] if len(rest) > limit else None
        return [r for _, r in page], cursor


class FakeUsage:
    """UsageStore with spend set by the test."""

    def __init__(self) -> None:
        self.spend: dict[tuple[str, str, str], float] = {}

    async def record(self, identity: Identity, model: str, usage: Usage) -> None:
        key = ("key", identity.key_id, "day")
        self.spend[key] = self.spend.get(key, 0.0) + usage.cost_usd

    async def spend_usd(self, subject: str, name: str, period: Period) -> float:
        return self.spend.get((subject, name, period), 0.0)


class FakeFeed:
    """An invalidation feed playing scripted rounds of events.

    Every round but the last ends with a lost connection; the last one then stays connected.
    """

    def __init__(self, *rounds: list[str]) -> None:
        self.rounds = list(rounds)
        self.connections = 0

    async def events(self) -> AsyncIterator[str]:
        self.connections += 1
        if not self.rounds:
            raise OSError("connection refused")
        events = self.rounds.pop(0)
        for event in events:
            yield event
        if self.rounds:
            raise OSError("connection lost")
        await asyncio.Event().wait()
