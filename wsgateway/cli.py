"""``tilerouter-gateway``: serve HTTP + websocket until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Sequence

import tornado.httpserver
import tornado.netutil

from config.logs import setup_logging
from config.settings import Settings, parse_cli
from wsgateway.app import Gateway, make_app
from wsgateway.relay import RouterClient

log = logging.getLogger(__name__)


def loop_time() -> float:
    return asyncio.get_running_loop().time()


async def serve(settings: Settings, stop: asyncio.Event, ready: asyncio.Future | None = None
                ) -> None:
    """Run one gateway until ``stop`` is set; ``ready`` gets the bound port."""
    client = RouterClient(settings)
    await client.start()
    gateway = Gateway(settings, client)
    app = make_app(gateway)
    sockets = tornado.netutil.bind_sockets(settings.port, settings.host)
    ssl_ctx = None
    if settings.tls_cert:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    server = tornado.httpserver.HTTPServer(app, xheaders=False, ssl_options=ssl_ctx)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    log.info("gateway listening on %s://%s:%d/ (router %s%s)", "https" if ssl_ctx else "http",
             settings.host, port, settings.frontend,
             ", auth on" if gateway.auth.enabled else "")
    if ready is not None:
        ready.set_result(port)
    try:
        await stop.wait()
    finally:
        server.stop()  # no new connections; in-flight relays may still finish
        deadline = loop_time() + settings.drain_timeout
        while client.pending and loop_time() < deadline:
            await asyncio.sleep(0.02)
        await client.close()
        log.info("gateway stopped: connections=%d %s", gateway.connections,
                 dict(gateway.counters))


def main(argv: Sequence[str] | None = None) -> int:
    settings, _ = parse_cli("Run the tilerouter websocket/HTTP gateway.", argv)
    setup_logging(settings.log_level, "gateway")
    if settings.log_level.upper() != "DEBUG":
        logging.getLogger("tornado.access").setLevel(logging.WARNING)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(_main())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
