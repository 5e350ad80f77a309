"""Tiny HTTP endpoint serving the broker's latest published snapshot: ``GET /stats``
as JSON, ``GET /metrics`` in the Prometheus text format (``router.metrics``).

Runs in a daemon thread; it only reads ``broker.snapshot``, a dict the broker loop
replaces wholesale, so no lock is needed.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from router.metrics import CONTENT_TYPE, render, router_registry

log = logging.getLogger(__name__)


def start_stats_server(host: str, port: int, source: Any) -> ThreadingHTTPServer:
    """Serve ``source.snapshot`` as JSON and as metrics; returns the server
    (``.server_address`` has the port)."""
    registry = router_registry(lambda: source.snapshot)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            path = self.path.split("?", 1)[0]
            if path in ("/stats", "/stats/"):
                body, mime = json.dumps(source.snapshot).encode(), "application/json"
            elif path == "/metrics":
                body, mime = render(registry), CONTENT_TYPE
            else:
                self.send_error(404, "only /stats and /metrics live here")
                return
            self.send_response(200)
            self.send_header("Content-Type", mime)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("stats http: " + fmt, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="stats-http", daemon=True).start()
    log.info("router stats on http://%s:%d/stats", *server.server_address[:2])
    return server
