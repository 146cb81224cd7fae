"""Bedrock probes against the fake provider: signed, token-free by default, judged."""

from __future__ import annotations

import httpx

from llmproxy.common.settings import ProviderSettings
from llmproxy.fakeprovider import bedrock as fake
from llmproxy.health.probe import Prober
from llmproxy.health.settings import ProviderProbeSettings
from tests.harness.fake_provider import fake_provider

BEDROCK = ProviderSettings(name="b", kind="bedrock", region="eu-west-1")


async def test_bedrock_probe_is_signed_and_passes_against_the_fake() -> None:
    environ = {
        "AWS_ACCESS_KEY_ID": fake.TEST_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": fake.TEST_SECRET_ACCESS_KEY,
    }
    async with fake_provider() as running, httpx.AsyncClient(trust_env=False) as http:
        provider = BEDROCK.model_copy(update={"base_url": running.url})
        prober = Prober(http, environ, timeout_s=5.0, instance="i")
        listed = await prober.probe(provider, ProviderProbeSettings())
        completed = await prober.probe(
            provider, ProviderProbeSettings(mode="completion", model="fake-claude")
        )
        wrong = Prober(http, {**environ, "AWS_SECRET_ACCESS_KEY": "x"}, 5.0, "i")
        refused = await wrong.probe(provider, ProviderProbeSettings())
        assert await running.requests("/async-invoke") == 2
    assert (listed.ok, listed.status, listed.detail) == (True, 200, "signed listing answered")
    assert (completed.ok, completed.status) == (True, 200)
    assert (refused.ok, refused.status) == (False, 403)
    assert "signature" in refused.detail
