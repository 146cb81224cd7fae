"""The fake provider's aiohttp application: OpenAI, Anthropic, Azure OpenAI, Gemini and
Bedrock routes plus controls.

API routes (``/v1/...``, Azure's ``/openai/...``, Gemini's ``/v1beta/...``, Bedrock's
``/model/...``) go through the fault knobs; ``/healthz`` and the control routes
(``/_fake/...``) never do, so a supervisor or a test can always reach them.

Errors: a refused request raises `RequestError` inside a handler; the middleware
renders it in the calling API's error shape (OpenAI's, Anthropic's on
``/v1/messages``, Gemini's on ``/v1beta/``, Bedrock's on ``/model/...``). Nothing else is
raised on purpose.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web

from llmproxy.fakeprovider import anthropic, bedrock, completions, gemini, responses
from llmproxy.fakeprovider.knobs import Knobs, apply_update
from llmproxy.fakeprovider.responses import ChatRequest
from llmproxy.fakeprovider.validation import (
    RequestError,
    get_field,
    json_body,
    parse_chat,
)

_ANTHROPIC_PATH = "/v1/messages"
_AZURE_PREFIX = "/openai/"
_BEDROCK_PREFIXES = ("/model/", bedrock.LIST_PATH)
_API_PREFIXES = ("/v1/", _AZURE_PREFIX, gemini.PREFIX, *_BEDROCK_PREFIXES)
_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
_HANG_POLL_S = 0.05


@dataclass
class Stats:
    """What the fake provider has seen since start or the last reset."""

    requests: Counter[str] = field(default_factory=Counter)
    """Requests per path (control routes excluded)."""
    injected_errors: Counter[str] = field(default_factory=Counter)
    """Faults injected per kind: error_rate, outage_503, outage_hang, outage_reset."""
    with_credentials: int = 0
    """Requests carrying a key header (any API's); values are never kept."""

    def to_dict(self) -> dict[str, object]:
        """The stats as ``GET /_fake/stats`` returns them."""
        return {
            "requests": dict(self.requests),
            "injected_errors": dict(self.injected_errors),
            "injected_errors_total": self.injected_errors.total(),
            "requests_with_credentials": self.with_credentials,
        }


@dataclass
class _State:
    knobs: Knobs
    models: tuple[str, ...]
    rng: random.Random
    rng_seed: int
    """The seed `rng` last started from; a different `knobs.seed` restarts it."""
    stats: Stats = field(default_factory=Stats)
    closing: bool = False


_STATE = web.AppKey("fakeprovider_state", _State)


def build_app(knobs: Knobs, models: list[str]) -> web.Application:
    """The fake provider serving `models`, misbehaving as `knobs` say.

    `knobs` is shared, not copied: ``PUT /_fake/knobs`` changes it in place, and so
    may an embedding process.
    """
    app = web.Application(middlewares=[_api_middleware])
    # Not for security: a seeded generator makes the injected error sequence reproducible.
    rng = random.Random(knobs.seed)  # noqa: S311
    app[_STATE] = _State(knobs=knobs, models=tuple(models), rng=rng, rng_seed=knobs.seed)
    app.on_shutdown.append(_release_hung_requests)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/v1/models/{model}", _get_model)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_post(_ANTHROPIC_PATH, _anthropic_messages)
    app.router.add_get("/openai/models", _azure_models)
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", _azure_chat)
    app.router.add_post("/openai/deployments/{deployment}/completions", _azure_completions)
    app.router.add_post("/openai/deployments/{deployment}/embeddings", _azure_embeddings)
    app.router.add_get(f"{gemini.PREFIX}models", _gemini_models)
    app.router.add_post(f"{gemini.PREFIX}models/{{target}}", _gemini_call)
    app.router.add_post("/model/{model}/converse", _bedrock_converse)
    app.router.add_post("/model/{model}/converse-stream", _bedrock_converse)
    app.router.add_get(bedrock.LIST_PATH, _bedrock_list)
    app.router.add_get("/_fake/knobs", _get_knobs)
    app.router.add_put("/_fake/knobs", _put_knobs)
    app.router.add_get("/_fake/stats", _get_stats)
    app.router.add_post("/_fake/stats/reset", _reset_stats)
    return app


async def _release_hung_requests(app: web.Application) -> None:
    # Without this, a request held by outage="hang" would stall shutdown until timeout.
    app[_STATE].closing = True


# --- middleware: stats, faults, error rendering ----------------------------------------

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _api_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    state = request.app[_STATE]
    if request.path.startswith("/_fake/"):
        return await handler(request)
    state.stats.requests[request.path] += 1
    if any(name in request.headers for name in _CREDENTIAL_HEADERS):
        state.stats.with_credentials += 1
    if not request.path.startswith(_API_PREFIXES):
        return await handler(request)
    try:
        cut = await _inject_faults(request, state)
        return cut if cut is not None else await handler(request)
    except RequestError as exc:
        return _error_response(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Unknown URL or method: answer in the API's error shape, as the real ones do.
        message = f"Invalid URL ({request.method} {request.path})"
        return _error_response(request, RequestError(exc.status, message))


async def _inject_faults(request: web.Request, state: _State) -> web.StreamResponse | None:
    """Apply the knobs; return a response that replaces the answer, or None to go on."""
    knobs = state.knobs
    if knobs.outage == "hang":
        state.stats.injected_errors["outage_hang"] += 1
        while knobs.outage == "hang":
            if state.closing or request.transport is None or request.transport.is_closing():
                return _reset(request)
            await asyncio.sleep(_HANG_POLL_S)
    if knobs.outage == "reset":
        state.stats.injected_errors["outage_reset"] += 1
        return _reset(request)
    if knobs.outage == "503":
        state.stats.injected_errors["outage_503"] += 1
        raise RequestError(503, "The fake provider is in a simulated outage.")
    if knobs.latency_ms > 0:
        await asyncio.sleep(knobs.latency_ms / 1000)
    if knobs.seed != state.rng_seed:  # the knobs were changed in place, not through PUT
        _reseed(state)
    if knobs.error_rate > 0 and state.rng.random() < knobs.error_rate:
        state.stats.injected_errors["error_rate"] += 1
        raise RequestError(knobs.error_status, "The fake provider injected this error.")
    return None


def _reset(request: web.Request) -> web.StreamResponse:
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0 makes close() send a TCP RST, which is what "reset" promises.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # Never sent: aiohttp finds the transport gone and drops it as a client disconnect.
    return web.Response(status=499)


def _reseed(state: _State) -> None:
    state.rng.seed(state.knobs.seed)
    state.rng_seed = state.knobs.seed


def _error_response(request: web.Request, exc: RequestError) -> web.Response:
    if request.path.startswith(_BEDROCK_PREFIXES):
        kind = getattr(exc, "error_type", None) or bedrock.error_type_for(exc.status)
        headers = {"x-amzn-errortype": kind}
        return web.json_response(
            bedrock.error_body(exc.message), status=exc.status, headers=headers
        )
    if request.path == _ANTHROPIC_PATH:
        body = anthropic.error_body(_anthropic_error_type(exc.status), exc.message)
    elif request.path.startswith(gemini.PREFIX):
        body = gemini.error(exc.status, exc.message)
    else:
        error_type, code = _openai_error_type(exc.status)
        body = responses.openai_error(
            exc.message, error_type=error_type, param=exc.param, code=exc.code or code
        )
    return web.json_response(body, status=exc.status)


def _openai_error_type(status: int) -> tuple[str, str | None]:
    if status == 429:
        return "requests", "rate_limit_exceeded"
    if status >= 500:
        return "server_error", None
    return "invalid_request_error", None


def _anthropic_error_type(status: int) -> str:
    named = {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        503: "overloaded_error",
        529: "overloaded_error",
    }
    return named.get(status, "api_error" if status >= 500 else "invalid_request_error")


# --- OpenAI routes ---------------------------------------------------------------------


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _list_models(request: web.Request) -> web.Response:
    return web.json_response(responses.models_list(request.app[_STATE].models))


async def _get_model(request: web.Request) -> web.Response:
    model = request.match_info["model"]
    _check_model(model, request.app[_STATE])
    return web.json_response(responses.models_list([model])["data"][0])


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    return await _answer_chat(request, await json_body(request))


async def _answer_chat(request: web.Request, body: dict[str, object]) -> web.StreamResponse:
    state = request.app[_STATE]
    chat, stream = parse_chat(body)
    _check_model(chat.model, state)
    chat = _with_cache(chat, state.knobs)
    return await _reply(
        request,
        stream,
        lambda created: responses.chat_completion(chat, created=created),
        lambda created: responses.chat_completion_chunks(chat, created=created),
    )


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _answer_completion(request, await json_body(request))


async def _answer_completion(request: web.Request, body: dict[str, object]) -> web.StreamResponse:
    state = request.app[_STATE]
    completion, stream = completions.parse_completion(body)
    _check_model(completion.model, state)
    return await _reply(
        request,
        stream,
        lambda created: completions.text_completion(completion, created=created),
        lambda created: completions.text_completion_chunks(completion, created=created),
    )


async def _reply(
    request: web.Request,
    stream: bool,
    whole: Callable[[int], responses.JSON],
    chunks: Callable[[int], list[responses.JSON]],
) -> web.StreamResponse:
    """The answer as one JSON object, or streamed as its chunks and [DONE]; both stamped
    with the current time."""
    created = int(time.time())
    if not stream:
        return web.json_response(whole(created))
    events = [responses.sse_data(chunk) for chunk in chunks(created)]
    events.append(responses.sse_data("[DONE]"))
    return await _stream(request, events, request.app[_STATE].knobs)


async def _embeddings(request: web.Request) -> web.Response:
    return await _answer_embeddings(request, await json_body(request))


async def _answer_embeddings(request: web.Request, body: dict[str, object]) -> web.Response:
    state = request.app[_STATE]
    model = get_field(body, "model", str, required=True)
    raw_input = get_field(body, "input", (str, list), required=True)
    inputs = [raw_input] if isinstance(raw_input, str) else raw_input
    if not inputs or not all(isinstance(item, str) for item in inputs):
        raise RequestError(400, "'input' must be a string or a non-empty array of strings.")
    encoding = get_field(body, "encoding_format", str) or "float"
    if encoding not in ("float", "base64"):
        raise RequestError(
            400, "'encoding_format' must be 'float' or 'base64'.", param="encoding_format"
        )
    _check_model(model, state)
    return web.json_response(responses.embeddings(model, inputs, encoding_format=encoding))


# --- Anthropic route -------------------------------------------------------------------


async def _anthropic_messages(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    if "x-api-key" not in request.headers and "authorization" not in request.headers:
        raise RequestError(401, "x-api-key header is required")
    if "anthropic-version" not in request.headers:
        raise RequestError(400, "anthropic-version: header is required")
    chat, stream = anthropic.parse_request(await json_body(request))
    if chat.model not in state.models:
        raise RequestError(404, f"model: {chat.model}")
    chat = _with_cache(chat, state.knobs)
    if not stream:
        return web.json_response(anthropic.message(chat))
    events = [anthropic.sse_event(kind, data) for kind, data in anthropic.events(chat)]
    return await _stream(request, events, state.knobs)


# --- Azure OpenAI routes: OpenAI's answers under deployment paths ---------------------


def _check_azure(request: web.Request) -> None:
    if "api-key" not in request.headers and "authorization" not in request.headers:
        message = (
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
            "provide a valid key for an active subscription and use a correct regional API "
            "endpoint for your resource."
        )
        raise RequestError(401, message, code="401")
    if not request.query.get("api-version"):
        raise RequestError(404, "Resource not found", code="404")


async def _azure_models(request: web.Request) -> web.Response:
    _check_azure(request)
    return web.json_response(responses.models_list(request.app[_STATE].models))


async def _azure_deployment_body(request: web.Request) -> dict[str, object]:
    _check_azure(request)
    deployment = request.match_info["deployment"]
    if deployment not in request.app[_STATE].models:
        message = "The API deployment for this resource does not exist."
        raise RequestError(404, message, code="DeploymentNotFound")
    # Azure answers with the deployment's model whatever the body's `model` says.
    return {**await json_body(request), "model": deployment}


async def _azure_chat(request: web.Request) -> web.StreamResponse:
    return await _answer_chat(request, await _azure_deployment_body(request))


async def _azure_completions(request: web.Request) -> web.StreamResponse:
    return await _answer_completion(request, await _azure_deployment_body(request))


async def _azure_embeddings(request: web.Request) -> web.Response:
    return await _answer_embeddings(request, await _azure_deployment_body(request))


# --- Gemini routes ---------------------------------------------------------------------


def _check_gemini_key(request: web.Request) -> None:
    if "x-goog-api-key" not in request.headers and "key" not in request.query:
        message = (
            "Method doesn't allow unregistered callers (callers without established identity)."
            " Please use API Key or other form of API consumer identity to call this API."
        )
        raise RequestError(403, message)


async def _gemini_models(request: web.Request) -> web.Response:
    _check_gemini_key(request)
    return web.json_response(gemini.models_list(request.app[_STATE].models))


async def _gemini_call(request: web.Request) -> web.StreamResponse:
    _check_gemini_key(request)
    state = request.app[_STATE]
    model, _, method = request.match_info["target"].rpartition(":")
    if model not in state.models:
        raise RequestError(404, f"models/{model} is not found for API version v1beta.")
    body = await json_body(request)
    if method == "batchEmbedContents":
        return web.json_response(gemini.batch_embed(model, body))
    if method not in ("generateContent", "streamGenerateContent"):
        raise RequestError(404, f"Method {method!r} is not found for models/{model}.")
    parsed = gemini.parse_request(body, model)
    parsed = dataclasses.replace(parsed, chat=_with_cache(parsed.chat, state.knobs))
    if method == "generateContent":
        return web.json_response(gemini.generate_content(parsed))
    if request.query.get("alt") != "sse":
        raise RequestError(400, "The fake serves streamGenerateContent only with alt=sse.")
    events = [responses.sse_data(event) for event in gemini.stream_events(parsed)]
    return await _stream(request, events, state.knobs)


# --- Bedrock routes --------------------------------------------------------------------


async def _bedrock_converse(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    content = await request.read()
    raw_path = request.rel_url.raw_path
    headers = {k.lower(): v for k, v in request.headers.items()}
    bedrock.verify_signature("POST", raw_path, request.rel_url.raw_query_string, headers, content)
    try:
        body = json.loads(content)
    except ValueError as exc:
        raise bedrock.BedrockError(400, "ValidationException", "the body is not JSON") from exc
    model = request.match_info["model"]
    if model not in state.models:
        raise bedrock.BedrockError(404, "ResourceNotFoundException", f"model {model} not found")
    chat, tool = bedrock.parse_converse(model, body)
    chat = _with_cache(chat, state.knobs)
    if raw_path.endswith("/converse"):
        return web.json_response(bedrock.converse(chat, tool))
    events = [
        bedrock.encode_event(kind, data) for kind, data in bedrock.converse_events(chat, tool)
    ]
    return await _stream(request, events, state.knobs, bedrock.EVENT_STREAM)


async def _bedrock_list(request: web.Request) -> web.Response:
    # ListAsyncInvokes: what health probes call, since Bedrock's runtime lists no models.
    headers = {k.lower(): v for k, v in request.headers.items()}
    query = request.rel_url.raw_query_string
    bedrock.verify_signature("GET", request.rel_url.raw_path, query, headers, b"")
    return web.json_response({"asyncInvokeSummaries": []})


# --- controls --------------------------------------------------------------------------


async def _get_knobs(request: web.Request) -> web.Response:
    return web.json_response(request.app[_STATE].knobs.to_dict())


async def _put_knobs(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    try:
        update = await json_body(request)
        apply_update(state.knobs, update)
    except (RequestError, ValueError) as exc:
        return web.json_response(responses.openai_error(str(exc)), status=400)
    if "seed" in update:
        _reseed(state)
    return web.json_response(state.knobs.to_dict())


async def _get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[_STATE].stats.to_dict())


async def _reset_stats(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    state.stats = Stats()
    return web.json_response(state.stats.to_dict())


# --- helpers ---------------------------------------------------------------------------


async def _stream(
    request: web.Request,
    events: Iterable[bytes],
    knobs: Knobs,
    content_type: str = "text/event-stream; charset=utf-8",
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": content_type, "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        for index, event in enumerate(events):
            if index and knobs.chunk_delay_ms > 0:
                await asyncio.sleep(knobs.chunk_delay_ms / 1000)
            await response.write(event)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client stopped reading; nothing is left to tell it
    return response


def _with_cache(chat: ChatRequest, knobs: Knobs) -> ChatRequest:
    """chat, reporting the prompt cache reads the knobs ask for."""
    if not knobs.cached_prompt_tokens:
        return chat
    return dataclasses.replace(chat, cached_tokens=knobs.cached_prompt_tokens)


def _check_model(model: str, state: _State) -> None:
    if model not in state.models:
        message = f"The model `{model}` does not exist or you do not have access to it."
        raise RequestError(404, message, param="model", code="model_not_found")
