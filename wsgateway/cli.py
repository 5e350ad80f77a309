"""``tilerouter-gateway``: serve HTTP + websocket until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Sequence

import tornado.httpserver
import tornado.ioloop
import tornado.netutil

from config.logs import setup_logging
from config.settings import Settings, parse_cli
from wsgateway.app import make_app
from wsgateway.fast_http import FastTiles
from wsgateway.gateway import Gateway
from wsgateway.handoff import hand_off
from wsgateway.metrics import FLUSH_EVERY
from wsgateway.router_pool import RouterPool

log = logging.getLogger(__name__)


async def serve(settings: Settings, stop: asyncio.Event, ready: asyncio.Future | None = None
                ) -> None:
    """Run one gateway until ``stop`` is set; ``ready`` gets the bound port."""
    client = RouterPool(settings)
    await client.start()
    gateway = Gateway(settings, client)
    app = make_app(gateway)
    # this process' metrics, for whichever sibling on the port answers /metrics
    flusher = tornado.ioloop.PeriodicCallback(gateway.exporter.flush, FLUSH_EVERY * 1000)
    if settings.metrics_dir:
        flusher.start()
    # several gateway processes may share one port (SO_REUSEPORT): the kernel spreads
    # connections across them, so HTTP/websocket handling uses more than one core
    sockets = tornado.netutil.bind_sockets(settings.port, settings.host,
                                           reuse_port=settings.gateways > 1)
    ssl_ctx = None
    if settings.tls_cert:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    server = tornado.httpserver.HTTPServer(FastTiles(app, gateway), xheaders=False,
                                           ssl_options=ssl_ctx)
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
        await hand_off(server, gateway, settings.drain_timeout)
        gateway.stored.close()
        flusher.stop()
        gateway.exporter.flush()  # the totals outlive the process (README "Metrics")
        await client.close()  # anything still waiting on the router: 'unavailable'
        log.info("gateway stopped: connections=%d %s", gateway.connections,
                 dict(gateway.counters))


def main(argv: Sequence[str] | None = None) -> int:
    settings, _ = parse_cli("Run the tilerouter websocket/HTTP gateway.", argv)
    setup_logging(settings.log_level, "gateway", settings.log_format)
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
