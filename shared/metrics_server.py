"""The HTTP endpoint of a long-running service: `/metrics`, `/livez`, `/readyz`.

One small threaded server per process, on METRICS_ADDRESS:METRICS_PORT (127.0.0.1 unless told
otherwise; port 0 turns it off). `/metrics` is the Prometheus text format of the service's own
registry; `/livez` and `/readyz` answer 200 or 503 with one line of text, which the `health`
commands print. A probe never changes anything, so it may be called as often as one likes.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import prometheus_client as prom

from shared.errors import ConfigError
from shared.health import HealthChecks, Verdict
from shared.logging import get_logger
from shared.settings import MetricsSettings

LIVE_PATH = "/livez"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
_log = get_logger(__name__)


class MetricsServer:
    """A running endpoint; `close()` stops it (the services let it end with the process)."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve(
    settings: MetricsSettings, registry: prom.CollectorRegistry, health: HealthChecks
) -> MetricsServer | None:
    """Start the endpoint in a daemon thread, or nothing when METRICS_PORT is 0.

    A port that is taken or an address not on this machine is configuration: `ConfigError`.
    """
    if not settings.port:
        return None
    handler = _handler_class(registry, health)
    try:
        server = ThreadingHTTPServer((settings.address, settings.port), handler)
    except OSError as error:
        raise ConfigError(
            f"METRICS_PORT {settings.port} on METRICS_ADDRESS {settings.address} cannot be "
            f"used: {error.strerror or type(error).__name__}"
        ) from None
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="metrics-endpoint", daemon=True)
    thread.start()
    _log.info(
        "metrics endpoint listening",
        address=settings.address,
        port=settings.port,
        paths=[METRICS_PATH, LIVE_PATH, READY_PATH],
    )
    return MetricsServer(server, thread)


def _handler_class(
    registry: prom.CollectorRegistry, health: HealthChecks
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == METRICS_PATH:
                self._send(HTTPStatus.OK, prom.generate_latest(registry), prom.CONTENT_TYPE_LATEST)
            elif path == LIVE_PATH:
                self._send_verdict(health.liveness())
            elif path == READY_PATH:
                self._send_verdict(health.readiness())
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

        def _send_verdict(self, verdict: Verdict) -> None:
            status = HTTPStatus.OK if verdict.ok else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(status, f"{verdict.detail}\n".encode(), "text/plain; charset=utf-8")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # A scrape every few seconds is not news; http.server would print each to stderr.
            return

    return Handler
