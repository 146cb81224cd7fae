"""Where experiments and their outcome live: a Protocol and its Redis form.

One Redis hash, `<prefix>:experiments`, experiment name -> the serialized Experiment message
(definition, state, start, end, faults applied, end reason, observed metrics), and the leader's
running set (`{<prefix>:experiments}:running`, what the followers serve to Envoy). Every Redis
failure becomes StoreUnavailableError, which the API answers as UNAVAILABLE. With a lease, every
write but a creation is fenced (see lease.py): a deposed leader's write raises NotLeaderError.
"""

from __future__ import annotations

from typing import Protocol

from redis.exceptions import RedisError

from llmproxy._gen.fault.v1 import fault_pb2
from llmproxy.common.redis import AnyRedis
from llmproxy.fault.errors import ExperimentExistsError, StoreUnavailableError
from llmproxy.fault.lease import Lease, experiments_key, slot_key


def _decode(data: bytes | str) -> fault_pb2.Experiment:
    return fault_pb2.Experiment.FromString(data if isinstance(data, bytes) else data.encode())


class ExperimentStore(Protocol):
    """Durable records of experiments."""

    async def create(self, experiment: fault_pb2.Experiment) -> None:
        """Record a new experiment; ExperimentExistsError if its name is taken."""

    async def get(self, name: str) -> fault_pb2.Experiment | None:
        """The experiment of that name, or None."""

    async def all(self) -> list[fault_pb2.Experiment]:
        """Every experiment, in no particular order."""

    async def put(self, experiment: fault_pb2.Experiment) -> None:
        """Replace an experiment's record."""

    async def put_running(self, running: list[fault_pb2.Experiment]) -> None:
        """Publish the running set (the leader's, for the followers)."""

    async def get_running(self) -> list[fault_pb2.Experiment]:
        """The running set the leader last published."""

    async def aclose(self) -> None:
        """Release connections."""


class RedisExperimentStore:
    """ExperimentStore in one Redis hash."""

    def __init__(self, redis: AnyRedis, prefix: str, lease: Lease | None = None) -> None:
        self._redis = redis
        self._key = experiments_key(prefix)
        self._running_key = slot_key(prefix, "running")
        self._lease = lease

    @staticmethod
    def _unavailable(exc: RedisError) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"Redis is unreachable, experiments cannot be read or recorded ({exc}); "
            "no fault was changed"
        )

    async def create(self, experiment: fault_pb2.Experiment) -> None:
        """Record a new experiment (HSETNX: two creators of one name cannot both win)."""
        data = experiment.SerializeToString(deterministic=True)
        try:
            created = await self._redis.hsetnx(self._key, experiment.name, data)
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        if not created:
            raise ExperimentExistsError(f"an experiment named {experiment.name!r} already exists")

    async def get(self, name: str) -> fault_pb2.Experiment | None:
        """The experiment of that name, or None."""
        try:
            data = await self._redis.hget(self._key, name)
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return None if data is None else _decode(data)

    async def all(self) -> list[fault_pb2.Experiment]:
        """Every experiment."""
        try:
            found = await self._redis.hgetall(self._key)
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return [_decode(v) for v in found.values()]

    async def put(self, experiment: fault_pb2.Experiment) -> None:
        """Replace an experiment's record."""
        data = experiment.SerializeToString(deterministic=True)
        if self._lease is not None:
            await self._lease.fenced_hset(self._key, experiment.name, data)
            return
        try:
            await self._redis.hset(self._key, experiment.name, data)
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    async def put_running(self, running: list[fault_pb2.Experiment]) -> None:
        """Publish the running set, as a ListExperimentsResponse."""
        data = fault_pb2.ListExperimentsResponse(experiments=running).SerializeToString(
            deterministic=True
        )
        if self._lease is not None:
            await self._lease.fenced_set(self._running_key, data)
            return
        try:
            await self._redis.set(self._running_key, data)
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    async def get_running(self) -> list[fault_pb2.Experiment]:
        """The running set the leader last published (none if never)."""
        try:
            data = await self._redis.get(self._running_key)
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        if data is None:
            return []
        raw = data if isinstance(data, bytes) else data.encode()
        return list(fault_pb2.ListExperimentsResponse.FromString(raw).experiments)

    async def aclose(self) -> None:
        """Close the Redis client."""
        await self._redis.aclose()
