"""The OpenAI servicer wired to the fakes, as the servicer tests build it."""

from __future__ import annotations

from typing import Any

from llmproxy.router.cache.stats import CacheStats
from llmproxy.router.calls import Failover
from llmproxy.router.service import OpenAIServicer
from llmproxy.router.settings import ModelSettings, RouterSettings
from tests.unit.router.fakes import FakeClient, MemoryCache, RecordingUsage


class TwoTargets:
    """The servicer over a model whose targets are the providers "primary" and "backup".

    Failover records its waits instead of sleeping, so retry tests run at once.
    """

    def __init__(
        self,
        model: ModelSettings,
        primary: list[Any] | None = None,
        backup: list[Any] | None = None,
        *,
        delay_s: float = 0,
        kinds: tuple[str, str] = ("openai", "openai"),
        reconciler: Any = None,
        **settings: Any,
    ) -> None:
        self.primary = FakeClient("primary", primary, delay_s, kinds[0])
        self.backup = FakeClient("backup", backup, delay_s, kinds[1])
        self.cache = MemoryCache()
        self.usage = RecordingUsage()
        self.stats = CacheStats()
        self.sleeps: list[float] = []
        router_settings = RouterSettings(**settings)

        async def no_sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        clients = {"primary": self.primary, "backup": self.backup}
        self.servicer = OpenAIServicer(
            [model],
            clients,
            router_settings,
            cache=self.cache,
            usage=self.usage,
            stats=self.stats,
            failover=Failover(clients, router_settings.failover, no_sleep),
            reconciler=reconciler,
        )


class OneTarget:
    """The servicer over a model whose one target is the provider "p", answering from a script."""

    def __init__(
        self, model: ModelSettings, script: list[Any] | None = None, **settings: Any
    ) -> None:
        self.provider = FakeClient("p", script)
        self.cache = MemoryCache()
        self.usage = RecordingUsage()
        self.servicer = OpenAIServicer(
            [model],
            {"p": self.provider},
            RouterSettings(**settings),
            cache=self.cache,
            usage=self.usage,
        )
