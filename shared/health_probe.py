"""The `health` command of both services: ask a running one's `/livez` and `/readyz`.

It reads the same METRICS_PORT and METRICS_ADDRESS as the service, so a container's healthcheck
is just `email-consumer health` (no curl in the image). Exit 0 with one line on stdout when the
service is live and ready; otherwise exit 1 with one line on stderr saying what is wrong.
"""

from __future__ import annotations

import argparse
import http.client
from typing import Any, Final

from shared.cli import EXIT_OK, EXIT_UNEXPECTED, add_command, fail
from shared.display import printable
from shared.errors import ConfigError
from shared.metrics_server import LIVE_PATH, READY_PATH
from shared.settings import MetricsSettings

DEFAULT_TIMEOUT_S: Final = 5.0
# Listening on every address includes loopback, which is where a probe in the same container
# or on the same host reaches it.
_LOOPBACK_FOR: Final = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
_DETAIL_LIMIT: Final = 200


class ProbeFailed(Exception):
    """The endpoint did not answer, or answered that the service is not live or not ready."""


def add_health_command(
    commands: argparse._SubParsersAction[Any], service: str
) -> argparse.ArgumentParser:
    return add_command(
        commands,
        "health",
        help=f"ask a running {service}'s /livez and /readyz (exit 0 or 1, one line)",
        description=(
            f"Ask the {service} running on this host (METRICS_ADDRESS, METRICS_PORT) whether it "
            "is live (its loop makes progress) and ready (doing its job). Exit 0 with one line "
            "on stdout when both hold, 1 with one line on stderr saying what does not."
        ),
    )


def run_health(prog: str, settings: MetricsSettings, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """The command: print one line and return the exit code."""
    try:
        line = check(settings, timeout_s)
    except ProbeFailed as failure:
        return fail(prog, EXIT_UNEXPECTED, str(failure))
    print(line)
    return EXIT_OK


def check(settings: MetricsSettings, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """'live: ...; ready: ...' when both probes pass; `ProbeFailed` naming the first that fails."""
    if not settings.port:
        raise ConfigError("METRICS_PORT is 0 (off), so there is no health endpoint to ask")
    host = _LOOPBACK_FOR.get(settings.address, settings.address)
    live = _ask(host, settings.port, LIVE_PATH, timeout_s, "live")
    ready = _ask(host, settings.port, READY_PATH, timeout_s, "ready")
    return f"live: {live}; ready: {ready}"


def _ask(host: str, port: int, path: str, timeout_s: float, what: str) -> str:
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        detail = printable(response.read().decode("utf-8", "replace").strip(), _DETAIL_LIMIT)
    except (OSError, http.client.HTTPException) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise ProbeFailed(f"no answer from {host}:{port}{path}: {reason}") from None
    finally:
        connection.close()
    if response.status != http.client.OK:
        raise ProbeFailed(f"not {what}: {detail}")
    return detail
