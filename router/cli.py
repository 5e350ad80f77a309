"""``tilerouter-router``: run the broker (and its stats port) until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence

from config.logs import setup_logging
from config.settings import parse_cli
from router.broker import Broker
from router.stats_http import start_stats_server

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    settings, _ = parse_cli("Run the tilerouter router (broker).", argv)
    setup_logging(settings.log_level, "router", settings.log_format)
    broker = Broker(settings)
    server = None
    if settings.stats_port:
        server = start_stats_server(settings.stats_host, settings.stats_port, broker)
        broker.snapshot = broker.stats()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        broker.stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        broker.run()
    finally:
        if server is not None:
            server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
