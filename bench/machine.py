"""What the benchmark ran on: CPU, memory, load, and the versions of everything measured."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pika

_PACKAGES = (
    "pika",
    "dramatiq",
    "celery",
    "kombu",
    "faststream",
    "aio-pika",
    "aiosmtplib",
    "SQLAlchemy",
    "aiosmtpd",
    "rabbit-welcome",
)
_REPO = Path(__file__).resolve().parents[1]


def describe(amqp_url: str) -> dict[str, Any]:
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "rabbitmq": _rabbitmq_version(amqp_url),
        "packages": {name: _version(name) for name in _PACKAGES},
        "load_average_at_start": load_average(),
    }


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: other work on the machine skews every figure."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []


def _commit() -> str | None:
    """The checked-out commit, "+" when the work tree has changes: a figure names its code."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        changed = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an installed copy): the figures still stand
    return f"{head}+" if changed else head


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=_REPO, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _rabbitmq_version(amqp_url: str) -> str | None:
    try:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    except (pika.exceptions.AMQPError, OSError):
        return None
    try:
        properties = connection._impl.server_properties  # pika keeps them only there
        raw = properties.get("version", b"")
        return raw.decode() if isinstance(raw, bytes) else str(raw)
    finally:
        connection.close()
