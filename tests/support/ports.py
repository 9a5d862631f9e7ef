"""Free TCP ports on the loopback interface, chosen outside the kernel's ephemeral range.

A server a test stops and starts again (a RabbitMQ node, an SMTP sink) must find its port free
when it comes back. A port from the ephemeral range may meanwhile have become the local end of
some outgoing connection, or of a client reconnecting to that very port: with nothing listening,
Linux can pair such a connection with itself (a TCP "self-connect"), and the restarted server
then dies with `eaddrinuse`. Ports below the ephemeral range are never handed out that way.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_LOWEST_PORT = 10_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_FALLBACK_EPHEMERAL_START = 32_768  # Linux's default when the range cannot be read


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _FALLBACK_EPHEMERAL_START


def free_port() -> int:
    """A port nothing listens on now (there is a small race until the caller binds it)."""
    highest = _ephemeral_start() - 1
    if highest <= _LOWEST_PORT:
        raise RuntimeError(f"no ports below the ephemeral range ({_EPHEMERAL_RANGE})")
    for _attempt in range(200):
        port = random.randint(_LOWEST_PORT, highest)
        if _bindable(port):
            return port
    raise RuntimeError(f"no free port between {_LOWEST_PORT} and {highest}")


@contextmanager
def taken_port() -> Iterator[int]:
    """A port something listens on (and accepts nothing from) for the block."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def free_port_block(size: int) -> int:
    """The first of `size` consecutive ports nothing listens on now (same race as free_port)."""
    highest = _ephemeral_start() - size
    for _attempt in range(200):
        first = random.randint(_LOWEST_PORT, highest)
        if all(_bindable(port) for port in range(first, first + size)):
            return first
    raise RuntimeError(f"no {size} free consecutive ports between {_LOWEST_PORT} and {highest}")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
