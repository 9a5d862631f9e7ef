"""`python -m bench --tracing`: every measured service traces, as set up by the standard OTEL_*
variables, and exports its spans over OTLP/HTTP to a receiver in this process that answers each
export and discards it. What the run measures is the services' own cost of tracing (spans,
batching, the export requests), not a collector's."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shared.settings import TRACING_VARIABLES


class ExportCounter:
    """How many export requests, and how many bytes of spans, the receiver was sent."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self._lock = threading.Lock()

    def add(self, size: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += size


@contextmanager
def tracing_to_a_discarding_receiver() -> Iterator[ExportCounter]:
    """For the block, OTEL_* variables in this process's environment (which the services the
    bench starts inherit) that send every span to a receiver on 127.0.0.1."""
    counter = ExportCounter()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length", 0))
            self.rfile.read(size)
            counter.add(size)
            # An empty ExportTraceServiceResponse encodes to no bytes: full success.
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="otlp-discard", daemon=True)
    thread.start()
    variables = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
    }
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield counter
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.shutdown()
        server.server_close()


def tracing_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The OTEL_* variables of `environ` that decide tracing: for a service set up in this
    process from an environment of its own (the publish section's relay)."""
    return {name: environ[name] for name in TRACING_VARIABLES if name in environ}
