"""Stored responses as the Responses API sees them: continue, retrieve, delete, keep.

A stored response belongs to the tenant whose key created it; another tenant asking for it gets
the 404 an unknown id gets, as OpenAI answers for ids a key cannot see. A request that needs the
store and finds it down is answered 503; an answer that could not be stored is still answered
(storing is logged and counted, never a failure of the answer).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from prometheus_client import Counter

from llmproxy.router.errors import RouterError
from llmproxy.router.stored_responses import (
    ResponseStore,
    StoredResponse,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)

STORE_ERRORS = Counter(
    "llmproxy_responses_store_errors_total",
    "Responses answered but not stored because the response store did not answer.",
)


class ResponseNotFoundError(RouterError):
    """No stored response of this id that the caller's tenant may see."""

    status = 404
    error_type = "invalid_request_error"

    def __init__(self, response_id: str, param: str | None) -> None:
        super().__init__(f"Response with id {response_id!r} not found.", param=param)


class ResponseStorage:
    """The store, its TTL and the writes under way, for one router."""

    def __init__(self, store: ResponseStore, ttl_s: int) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._saving: set[asyncio.Task[None]] = set()

    async def conversation(self, response_id: str, tenant: str) -> list[dict[str, Any]]:
        """The stored conversation previous_response_id continues (404, or 503 when the store
        is down)."""
        return (await self._owned(response_id, tenant, "previous_response_id")).messages

    async def retrieve(self, response_id: str, tenant: str) -> bytes:
        """GET /v1/responses/{id}: the response object as it was answered."""
        stored = await self._owned(response_id, tenant, None)
        return json.dumps(stored.response).encode()

    async def delete(self, response_id: str, tenant: str) -> bytes:
        """DELETE /v1/responses/{id}: OpenAI's deletion confirmation."""
        await self._owned(response_id, tenant, None)
        if not await self._store.delete(response_id):
            raise ResponseNotFoundError(response_id, None)  # expired or deleted meanwhile
        return json.dumps({"id": response_id, "object": "response", "deleted": True}).encode()

    async def save(self, stored: StoredResponse) -> None:
        """Keep a response; a failure is logged and counted, never raised.

        The write is a task of its own, awaited shielded: the client's call ends once it is
        stored (a follow-up sent at once finds it), and a client leaving does not cut it short.
        """
        task = asyncio.create_task(self._put(stored))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)
        await asyncio.shield(task)

    async def _put(self, stored: StoredResponse) -> None:
        try:
            await self._store.put(stored, self._ttl_s)
        except StoreUnavailableError as err:
            STORE_ERRORS.inc()
            log.warning(
                "response not stored",
                extra={"response_id": stored.id, "error": type(err.__cause__).__name__},
            )

    async def _owned(self, response_id: str, tenant: str, param: str | None) -> StoredResponse:
        stored = await self._store.get(response_id)
        if stored is None or stored.tenant != tenant:
            raise ResponseNotFoundError(response_id, param)
        return stored
