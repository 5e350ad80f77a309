"""``tilerouter-worker``: run one worker process until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence

from config.logs import setup_logging
from config.settings import parse_cli
from workers.worker import Worker

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    settings, _ = parse_cli("Run one tilerouter worker.", argv)
    setup_logging(settings.log_level, "worker", settings.log_format)
    worker = Worker(settings)

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        worker.stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    worker.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
