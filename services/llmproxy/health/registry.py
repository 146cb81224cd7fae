"""This instance's view of every provider's health, and who to tell when it changes.

Every RPC answers from here, in memory: an answer never waits on a probe or on Redis. Watchers
(WatchProviders streams, EDS streams, the gRPC health mirror) subscribe; a subscription holds
the names of the providers that changed since it last looked, so a slow watcher costs one set,
never a growing queue, and always reads the latest state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from llmproxy.common.settings import ProviderSettings
from llmproxy.health.dns import Target
from llmproxy.health.errors import UnknownProviderError
from llmproxy.health.state import ProviderStatus

Listener = Callable[[ProviderStatus, ProviderStatus | None], None]


class Subscription:
    """The providers that changed since the last look; use as a context manager."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._pending: set[str] = set()
        self._event = asyncio.Event()

    def notify(self, name: str) -> None:
        """Mark name as changed."""
        self._pending.add(name)
        self._event.set()

    async def changes(self) -> set[str]:
        """Wait for at least one change; the names changed since the last call."""
        await self._event.wait()
        self._event.clear()
        names, self._pending = self._pending, set()
        return names

    def close(self) -> None:
        """Stop receiving changes."""
        self._registry.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Registry:
    """The latest status and address of each configured provider, in configuration order."""

    def __init__(
        self, providers: Sequence[ProviderSettings], clock: Callable[[], float] = time.time
    ) -> None:
        self.providers = {p.name: p for p in providers}
        self._clock = clock
        now = clock()
        self._statuses = {
            p.name: ProviderStatus(
                p.name, p.kind, p.base_url, "unspecified", "not probed yet", changed_at=now
            )
            for p in providers
        }
        self._targets: dict[str, Target] = {}
        self._subscriptions: set[Subscription] = set()
        self._listeners: list[Listener] = []

    def names(self) -> list[str]:
        """Every provider's name, in configuration order."""
        return list(self.providers)

    def provider(self, name: str) -> ProviderSettings:
        """The settings of provider name, or UnknownProviderError."""
        found = self.providers.get(name)
        if found is None:
            raise UnknownProviderError(name, self.providers)
        return found

    def status(self, name: str) -> ProviderStatus:
        """The latest status of provider name, or UnknownProviderError."""
        self.provider(name)
        return self._statuses[name]

    def statuses(self) -> list[ProviderStatus]:
        """Every provider's latest status, in configuration order."""
        return list(self._statuses.values())

    def target(self, name: str) -> Target | None:
        """Where provider name listens, once resolved."""
        return self._targets.get(name)

    def on_change(self, listener: Listener) -> None:
        """Call listener(new, old) whenever a provider's state, reason or circuit changes."""
        self._listeners.append(listener)

    def subscribe(self) -> Subscription:
        """A new subscription to changes of state and of addresses."""
        subscription = Subscription(self)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget subscription."""
        self._subscriptions.discard(subscription)

    def watchers(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscriptions)

    def _notify(self, name: str) -> None:
        for subscription in self._subscriptions:
            subscription.notify(name)

    def update(self, status: ProviderStatus) -> bool:
        """Store status (the latest probes always); True, and watchers told, if it changed."""
        old = self._statuses[status.name]
        new = status.stamped(old, self._clock())
        self._statuses[status.name] = new
        if new.key() == old.key():
            return False
        for listener in self._listeners:
            listener(new, old)
        self._notify(status.name)
        return True

    def set_target(self, name: str, target: Target) -> None:
        """Store provider name's addresses; watchers are told if they changed."""
        if self._targets.get(name) != target:
            self._targets[name] = target
            self._notify(name)
