"""Stored Responses API responses, which `previous_response_id` continues from.

One key per response in the stack's Redis (not the cache's: a stored response is the client's
state, not an entry to evict), with the store's TTL:
  llmproxy:response:{<response id>}   JSON: owner, model, conversation, response object

The conversation is what the next turn needs as chat messages: every earlier turn's input and
the assistant's output, without `instructions` (OpenAI does not carry them over). The owner is
the tenant and key that created it; only the same tenant sees it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from llmproxy.common.redis import AnyRedis
from llmproxy.router.errors import RouterError

PREFIX = "llmproxy:response:"


def response_key(response_id: str) -> str:
    """The Redis key of a stored response."""
    return f"{PREFIX}{{{response_id}}}"


class StoreUnavailableError(RouterError):
    """The response store did not answer: a request that needs it is answered 503."""

    status = 503
    error_type = "server_error"

    def __init__(self) -> None:
        super().__init__(
            "Stored responses are unavailable right now (the gateway's Redis does not "
            "answer); retry later, or send the whole conversation as input without "
            "previous_response_id.",
            code="store_unavailable",
        )


@dataclass(frozen=True)
class StoredResponse:
    """What a follow-up turn and a retrieval need of one answered response."""

    id: str
    tenant: str
    key_id: str
    model: str
    messages: list[dict[str, Any]]
    """The whole conversation as chat messages, this response's output last."""
    response: dict[str, Any]
    """The response object as the client got it."""

    def to_json(self) -> bytes:
        """The stored form."""
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> StoredResponse:
        """A stored response from its stored form."""
        fields = json.loads(data)
        return cls(**{name: fields[name] for name in cls.__dataclass_fields__})


class ResponseStore(Protocol):
    """Where responses are kept; every method raises StoreUnavailableError when the store
    does not answer."""

    async def get(self, response_id: str) -> StoredResponse | None:
        """The stored response, or None when there is none (never stored, deleted, expired)."""

    async def put(self, stored: StoredResponse, ttl_s: int) -> None:
        """Keep stored for ttl_s seconds."""

    async def delete(self, response_id: str) -> bool:
        """Forget a response; False when there was none."""


class RedisResponseStore:
    """ResponseStore in Redis, one JSON value per response."""

    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis

    async def get(self, response_id: str) -> StoredResponse | None:
        """The stored response, or None."""
        try:
            data = await self._redis.get(response_key(response_id))
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError() from exc
        return None if data is None else StoredResponse.from_json(data)

    async def put(self, stored: StoredResponse, ttl_s: int) -> None:
        """Keep stored for ttl_s seconds."""
        try:
            await self._redis.set(response_key(stored.id), stored.to_json(), ex=ttl_s)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError() from exc

    async def delete(self, response_id: str) -> bool:
        """Forget a response; False when there was none."""
        try:
            return bool(await self._redis.delete(response_key(response_id)))
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError() from exc
