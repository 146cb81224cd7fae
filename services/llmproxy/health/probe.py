"""Active probes: one real API call to a provider, timed and judged.

Probes go straight to the provider, not through Envoy's egress listener: once Envoy stops
routing to an unhealthy provider, a probe through it could never see the provider recover.
By default a probe lists the models, which costs no tokens: `GET /models` on OpenAI-compatible
APIs, Anthropic's and Gemini's alike, `GET /openai/models?api-version=...` on Azure OpenAI (the
models the resource offers: it proves the endpoint and the key, as a deployment list would, but
Azure's data plane lists no deployments). A provider configured for it gets a one-token
completion instead (on Azure, of the deployment named as the probe's model).

Bedrock's runtime API lists no models, so its token-free probe is a SigV4-signed
`GET /async-invoke?maxResults=1` (ListAsyncInvokes) on the same runtime host the calls go to: it
proves the host answers and the credentials sign correctly. Its completion probe is a Converse
call with maxTokens 1.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from llmproxy.common import aws
from llmproxy.common.settings import ProviderSettings
from llmproxy.health.answers import check_answer
from llmproxy.health.records import ProbeResult
from llmproxy.health.settings import ProviderProbeSettings

ANTHROPIC_VERSION = "2023-06-01"
MAX_BODY = 1024 * 1024
PROBE_PROMPT = "ping"
# The header each kind takes its key in, as is; the other kinds take a bearer token.
_KEY_HEADERS = {"anthropic": "x-api-key", "azure": "api-key", "gemini": "x-goog-api-key"}


def new_probe_client() -> httpx.AsyncClient:
    """The pooled client every probe goes through: no redirects, no proxies from the env."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        follow_redirects=False,
        trust_env=False,
    )


def _headers(provider: ProviderSettings, environ: Mapping[str, str]) -> dict[str, str]:
    key = environ.get(provider.api_key_env) if provider.api_key_env else None
    headers = {"accept": "application/json"}
    if provider.kind == "anthropic":
        headers["anthropic-version"] = ANTHROPIC_VERSION
    if key and provider.kind in _KEY_HEADERS:
        headers[_KEY_HEADERS[provider.kind]] = key
    elif key:
        headers["authorization"] = f"Bearer {key}"
    return headers


def _completion(provider: ProviderSettings, model: str) -> tuple[str, dict[str, Any]]:
    """(path, body) of a one-token completion of model in the provider's own API."""
    if provider.kind == "gemini":
        contents = [{"role": "user", "parts": [{"text": PROBE_PROMPT}]}]
        path = f"/models/{quote(model, safe='')}:generateContent"
        return path, {"contents": contents, "generationConfig": {"maxOutputTokens": 1}}
    prompt = [{"role": "user", "content": PROBE_PROMPT}]
    body: dict[str, Any] = {"model": model, "max_tokens": 1, "messages": prompt}
    if provider.kind == "anthropic":
        return "/messages", body
    if provider.kind == "azure":
        return f"/openai/deployments/{quote(model, safe='')}/chat/completions", body
    return "/chat/completions", body


BEDROCK_LIST_PATH = "/async-invoke?maxResults=1"


def _bedrock_request(
    http: httpx.AsyncClient,
    provider: ProviderSettings,
    how: ProviderProbeSettings,
    credentials: aws.AwsCredentials,
) -> httpx.Request:
    headers = {"accept": "application/json"}
    if how.mode == "models":
        method, url, content = "GET", f"{provider.base_url}{BEDROCK_LIST_PATH}", b""
    else:
        model = quote(how.model or "", safe="")
        method, url = "POST", f"{provider.base_url}/model/{model}/converse"
        body = {
            "messages": [{"role": "user", "content": [{"text": PROBE_PROMPT}]}],
            "inferenceConfig": {"maxTokens": 1},
        }
        content = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    signature = aws.sign(
        credentials, provider.region or "", url, method=method, headers=headers, body=content
    )
    return http.build_request(method, url, content=content, headers={**headers, **signature})


def probe_request(
    http: httpx.AsyncClient,
    provider: ProviderSettings,
    how: ProviderProbeSettings,
    environ: Mapping[str, str],
    credentials: aws.AwsCredentials | None = None,
) -> httpx.Request:
    """The HTTP request that probes provider (a bedrock one signed with credentials)."""
    if provider.kind == "bedrock":
        if credentials is None:
            raise aws.NoCredentialsError(f"bedrock provider {provider.name!r} has no credentials")
        return _bedrock_request(http, provider, how, credentials)
    headers = _headers(provider, environ)
    # Azure's api-version goes on every call; no other kind takes a query.
    params = {"api-version": provider.api_version} if provider.api_version else None
    if how.mode == "models":
        path = "/openai/models" if provider.kind == "azure" else "/models"
        url = f"{provider.base_url}{path}"
        return http.build_request("GET", url, headers=headers, params=params)
    path, body = _completion(provider, how.model or "")
    url = f"{provider.base_url}{path}"
    return http.build_request("POST", url, json=body, headers=headers, params=params)


class ProbeRunner(Protocol):
    """Anything that probes a provider (the real Prober, or a fake in unit tests)."""

    async def probe(self, provider: ProviderSettings, how: ProviderProbeSettings) -> ProbeResult:
        """Call provider once and judge the answer."""


class Prober:
    """Runs probes with one pooled client; every probe ends within timeout_s."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        environ: Mapping[str, str],
        timeout_s: float,
        instance: str,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._environ = environ
        self._timeout_s = timeout_s
        self._instance = instance
        self._wall_clock = wall_clock
        self._aws: aws.AwsCredentials | None = None

    async def _credentials(self, provider: ProviderSettings) -> aws.AwsCredentials | None:
        if provider.kind != "bedrock":
            return None
        if self._aws is None:  # the environment names one set of AWS credentials for all
            self._aws = await asyncio.to_thread(aws.resolve_credentials, self._environ)
        await aws.fresh(self._aws)
        return self._aws

    async def probe(self, provider: ProviderSettings, how: ProviderProbeSettings) -> ProbeResult:
        """Call provider once and judge the answer; never raises for the provider's failings."""
        started = time.perf_counter()
        status, ok, detail, rate_limited = 0, False, "", False
        try:
            async with asyncio.timeout(self._timeout_s):
                credentials = await self._credentials(provider)
                request = probe_request(self._http, provider, how, self._environ, credentials)
                response = await self._http.send(request, stream=True)
                try:
                    body = await _read_bounded(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            detail = f"timed out after {self._timeout_s:g} s"
        except httpx.HTTPError as exc:
            detail = f"no answer: {type(exc).__name__}"
        except aws.NoCredentialsError as exc:
            detail = str(exc)
        else:
            status = response.status_code
            error_type = response.headers.get("x-amzn-errortype", "").split(":", 1)[0]
            verdict = check_answer(provider.kind, how.mode, status, body, error_type)
            ok, detail, rate_limited = verdict.ok, verdict.detail, verdict.rate_limited
        return ProbeResult(
            ok=ok,
            status=status,
            latency_s=time.perf_counter() - started,
            detail=detail,
            at=self._wall_clock(),
            mode=how.mode,
            instance=self._instance,
            rate_limited=rate_limited,
        )


async def _read_bounded(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            break  # cut short, it fails as not JSON: no model list is this large
    return b"".join(chunks)
