"""The audit trail of control calls: one Redis stream every service appends to, and a log line.

Each service's access interceptor writes a record for every mutating call a person makes and
for every refused call; authz's ListAuditRecords pages through the stream. The structured log
line is the trail of last resort: it is written even when Redis is not reachable.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from redis.exceptions import RedisError

from llmproxy.common.redis import AnyRedis

log = logging.getLogger(__name__)

AUDIT_STREAM = "llmproxy:authz:audit"  # authz kept it before every service wrote to it
REDACTED = "[redacted]"
MAX_ARGUMENTS_CHARS = 2000


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    """One control call, as the audit trail keeps it (flat strings in a stream entry)."""

    time: float
    method: str
    actor: str
    peer: str
    outcome: str
    key_id: str = ""
    tenant: str = ""
    detail: str = ""
    service: str = ""
    role: str = ""
    arguments: str = ""
    token_id: str = ""
    # Assigned by the store (a Redis stream id); empty until stored.
    id: str = ""

    def fields(self) -> dict[str, str]:
        """The entry as flat string fields, without its id."""
        values = dataclasses.asdict(self)
        del values["id"]
        return {name: str(value) for name, value in values.items()}

    @classmethod
    def from_fields(cls, entry_id: str, values: dict[str, str]) -> AuditEntry:
        """An entry read back from the store; fields it does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)} - {"id", "time"}
        kept = {name: value for name, value in values.items() if name in known}
        return cls(id=entry_id, time=float(values.get("time", 0)), **kept)


class AuditTrail:
    """Appends entries to the stream (capped at about max_records) and to the log."""

    def __init__(self, redis: AnyRedis, max_records: int) -> None:
        self._redis = redis
        self._max_records = max_records

    async def append(self, entry: AuditEntry) -> str:
        """Log the entry and append it to the stream; its stream id, or "" when Redis failed.

        A Redis failure is logged, not raised: the call it records has already happened.
        """
        log.info("audit", extra={"audit": entry.fields()})
        try:
            entry_id = await self._redis.xadd(
                AUDIT_STREAM,
                entry.fields(),  # type: ignore[arg-type]  # redis-py's mapping type is invariant
                maxlen=self._max_records,
                approximate=True,
            )
        except (RedisError, OSError) as exc:
            # No traceback: the exception's text could name the Redis URL, with its password.
            log.error("audit record not stored", extra={"error": type(exc).__name__})  # noqa: TRY400
            return ""
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def redacted(message: Message) -> dict[str, Any]:
    """The message as a JSON-ready dict, each field marked `debug_redact` in its proto replaced.

    Every secret field of our protos (API keys, control tokens) carries the option, so what the
    audit trail records can be read by any viewer.
    """
    result: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.GetOptions().debug_redact:
            result[field.name] = REDACTED
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            result[field.name] = _message_value(field, value)
        elif _repeated(field):
            result[field.name] = [_scalar(field, v) for v in value]
        else:
            result[field.name] = _scalar(field, value)
    return result


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _message_value(field: FieldDescriptor, value: Any) -> Any:
    entry_type = field.message_type
    if entry_type is not None and entry_type.GetOptions().map_entry:
        value_field = entry_type.fields_by_name["value"]
        if value_field.type == FieldDescriptor.TYPE_MESSAGE:
            return {str(k): redacted(v) for k, v in value.items()}
        return {str(k): _scalar(value_field, v) for k, v in value.items()}
    if _repeated(field):
        return [redacted(v) for v in value]
    return redacted(value)


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        found = field.enum_type.values_by_number.get(value)
        return found.name if found else value
    if field.type == FieldDescriptor.TYPE_BYTES:
        return f"<{len(value)} bytes>"
    return value


def arguments_json(message: Message) -> str:
    """The redacted request as compact JSON, cut to MAX_ARGUMENTS_CHARS."""
    text = json.dumps(redacted(message), separators=(",", ":"), sort_keys=True, default=str)
    return text if len(text) <= MAX_ARGUMENTS_CHARS else text[: MAX_ARGUMENTS_CHARS - 3] + "..."


def find_field(values: dict[str, Any], name: str, depth: int = 2) -> str:
    """The first string value of a field called name, at most depth levels down; "" if none.

    Which key or token a call was about sits in its request (`key_id`) or, for a create, in its
    response (`key.key_id`): the audit trail records it for filtering.
    """
    found = values.get(name)
    if isinstance(found, str):
        return found
    if depth > 0:
        for value in values.values():
            if isinstance(value, dict):
                nested = find_field(value, name, depth - 1)
                if nested:
                    return nested
    return ""
