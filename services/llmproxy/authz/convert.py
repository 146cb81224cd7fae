"""Key and control token records and audit entries as the admin API's messages."""

from __future__ import annotations

from llmproxy._gen.authz.v1 import authz_pb2
from llmproxy.authz.keys import key_prefix
from llmproxy.authz.records import ControlTokenRecord, KeyRecord
from llmproxy.common.audit import AuditEntry
from llmproxy.common.timestamps import optional_timestamp, timestamp


def api_key(record: KeyRecord) -> authz_pb2.ApiKey:
    """The record's public metadata: never its hash."""
    return authz_pb2.ApiKey(
        key_id=record.key_id,
        prefix=key_prefix(record.key_id),
        tenant=record.tenant,
        user=record.user,
        name=record.name,
        allowed_models=list(record.allowed_models),
        tier=record.tier,
        budget=authz_pb2.Budget(
            daily_usd=record.daily_budget_usd, monthly_usd=record.monthly_budget_usd
        ),
        expire_time=optional_timestamp(record.expires_at),
        revoked=record.revoked,
        revoke_time=optional_timestamp(record.revoked_at),
        revoke_reason=record.revoke_reason,
        labels=record.labels,
        create_time=optional_timestamp(record.created_at),
        update_time=optional_timestamp(record.updated_at),
        rotate_time=optional_timestamp(record.rotated_at),
        previous_secret_expire_time=optional_timestamp(record.previous_valid_until),
    )


def control_token(record: ControlTokenRecord) -> authz_pb2.ControlToken:
    """The token's public metadata: never its hash."""
    return authz_pb2.ControlToken(
        token_id=record.token_id,
        name=record.name,
        role=record.access_role.value,
        create_time=timestamp(record.created_at),
        expire_time=optional_timestamp(record.expires_at),
        revoked=record.revoked,
        revoke_time=optional_timestamp(record.revoked_at),
        revoke_reason=record.revoke_reason,
        rotate_time=optional_timestamp(record.rotated_at),
        previous_secret_expire_time=optional_timestamp(record.previous_valid_until),
    )


def audit_record(entry: AuditEntry) -> authz_pb2.AuditRecord:
    """An audit entry as the API returns it."""
    return authz_pb2.AuditRecord(
        id=entry.id,
        time=timestamp(entry.time),
        method=entry.method,
        actor=entry.actor,
        peer=entry.peer,
        key_id=entry.key_id,
        tenant=entry.tenant,
        outcome=entry.outcome,
        detail=entry.detail,
        service=entry.service,
        role=entry.role,
        arguments=entry.arguments,
        token_id=entry.token_id,
    )
