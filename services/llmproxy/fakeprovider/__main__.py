"""Run the fake provider: ``python -m llmproxy.fakeprovider --port 8090``.

Logs one line once it listens (with the bound port, so ``--port 0`` is usable) and
exits with status 0 on SIGTERM or SIGINT after closing open connections.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from aiohttp import web

from llmproxy.fakeprovider.app import build_app
from llmproxy.fakeprovider.knobs import Knobs
from llmproxy.fakeprovider.responses import DEFAULT_MODELS

_log = logging.getLogger("llmproxy.fakeprovider")

# Streams and hung requests are cut rather than awaited: nobody waits on a fake.
_SHUTDOWN_TIMEOUT_S = 2.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llmproxy.fakeprovider", description=__doc__)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8090, help="port to bind, 0 for any free one")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated ids")
    parser.add_argument("--latency-ms", type=float, default=0, help="delay before each answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=0, help="delay between chunks")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of calls failed")
    parser.add_argument("--error-status", type=int, default=500, help="status of failed calls")
    parser.add_argument("--seed", type=int, default=0, help="seed of the error-rate generator")
    return parser


async def serve(knobs: Knobs, models: list[str], host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    runner = web.AppRunner(
        build_app(knobs, models), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        _log.info(
            "fake provider ready on http://%s:%d (models: %s)",
            bound_host,
            bound_port,
            ",".join(models),
        )
        await stop.wait()
        _log.info("fake provider stopping")
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: parse flags, configure logging, serve."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        knobs = Knobs(
            latency_ms=args.latency_ms,
            chunk_delay_ms=args.chunk_delay_ms,
            error_rate=args.error_rate,
            error_status=args.error_status,
            seed=args.seed,
        )
    except ValueError as exc:
        parser.error(str(exc))
    models = [model.strip() for model in args.models.split(",") if model.strip()]
    if not models:
        parser.error("--models needs at least one model id")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(knobs, models, args.host, args.port))


if __name__ == "__main__":
    main()
