"""What both command-line entry points need: argument types and a clean stop on signals."""

from __future__ import annotations

import argparse
import signal
import threading

from shared.logging import get_logger

_log = get_logger(__name__)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1, with a one-line error otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so long-running commands stop cleanly with exit 0."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        _log.info("stop requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop
