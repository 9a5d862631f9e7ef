"""Reading settings from the environment, with one clear error per bad value.

Each service builds its own frozen settings object from an `Environment` once, in its
composition root; nothing reads `os.environ` elsewhere. `Environment.names_read` lets a test
check that docker-compose.yml sets only variables the code reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from shared.errors import ConfigError

DEFAULT_AMQP_URL: Final = "amqp://guest:guest@localhost:5672/%2F"
LogFormat = Literal["auto", "json", "console"]
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})
_DATABASE_SCHEMES: Final = ("sqlite:", "postgresql:", "postgres:", "postgresql+psycopg:")


class Environment:
    """A read-only view of environment variables that remembers which names were asked for."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(os.environ if values is None else values)
        self.names_read: set[str] = set()
        # Name -> default, in the order first read: what `--help` lists.
        self.defaults: dict[str, str] = {}

    def text(self, name: str, default: str) -> str:
        self.names_read.add(name)
        self.defaults.setdefault(name, default)
        value = self._values.get(name)
        return default if value is None or value.strip() == "" else value.strip()

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        raw = self.text(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum}, got {value}")
        return value

    def port(self, name: str, default: int, *, allow_zero: bool = False) -> int:
        """A TCP port number; 0 only where it means "off"."""
        return self.integer(name, default, minimum=0 if allow_zero else 1, maximum=65535)

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self.text(name, str(default))
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not value >= minimum:  # also refuses NaN
            raise ConfigError(f"{name} must be at least {minimum}, got {raw}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.text(name, "true" if default else "false").lower()
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")

    def integers(self, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
        raw = self.text(name, ",".join(str(item) for item in default))
        try:
            values = tuple(int(part) for part in raw.split(",") if part.strip())
        except ValueError:
            raise ConfigError(f"{name} must be comma-separated whole numbers") from None
        if any(value <= 0 for value in values):
            raise ConfigError(f"{name} must hold positive numbers only")
        return values

    def database_url(self, name: str, default: str) -> str:
        """A database URL: `sqlite:///...` or `postgresql://...` (the two databases supported)."""
        url = self.text(name, default)
        if not url.startswith(_DATABASE_SCHEMES):
            scheme = url.partition(":")[0][:20]
            raise ConfigError(
                f"{name} must start with sqlite:/// or postgresql://, got a {scheme!r} URL"
            )
        return url

    def secret(self, name: str) -> str:
        """Like `text` with an empty default; kept apart so secrets are easy to find."""
        return self.text(name, "")


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    amqp_url: str
    """As written: one URL, or a comma-separated list of a cluster's nodes (see `urls`)."""
    heartbeat_s: int
    blocked_connection_timeout_s: float
    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None

    @property
    def urls(self) -> tuple[str, ...]:
        """Each node's URL; a connection fails over from one to the next (shared.amqp)."""
        return split_urls(self.amqp_url)


def split_urls(amqp_url: str) -> tuple[str, ...]:
    """The URLs of a comma-separated list (a comma inside a password is written `%2C`)."""
    return tuple(part.strip() for part in amqp_url.split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str
    format: LogFormat


def broker_settings(env: Environment) -> BrokerSettings:
    url = env.text("AMQP_URL", DEFAULT_AMQP_URL)
    urls = split_urls(url)
    if not urls or not all(part.startswith(("amqp://", "amqps://")) for part in urls):
        # One rule for a single URL and for each URL of a cluster's list.
        raise ConfigError("AMQP_URL must start with amqp:// or amqps://")
    return BrokerSettings(
        amqp_url=url,
        heartbeat_s=env.integer("AMQP_HEARTBEAT_S", 30, minimum=0),
        blocked_connection_timeout_s=env.number("AMQP_BLOCKED_TIMEOUT_S", 60.0, minimum=1.0),
        tls_ca_file=env.text("AMQP_TLS_CA_FILE", "") or None,
        tls_cert_file=env.text("AMQP_TLS_CERT_FILE", "") or None,
        tls_key_file=env.text("AMQP_TLS_KEY_FILE", "") or None,
    )


# OpenTelemetry's standard variables that decide whether tracing is on, where the spans go and
# which service they name; the SDK reads the others itself (OTEL_BSP_*, OTEL_TRACES_SAMPLER,
# OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS, ...). Values are the SDK's to check.
TRACING_VARIABLES: Final = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
)


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """The `TRACING_VARIABLES` that are set, by name (none set: tracing off)."""

    variables: Mapping[str, str] = field(default_factory=dict)


def tracing_settings(env: Environment) -> TracingSettings:
    values = {name: env.text(name, "") for name in TRACING_VARIABLES}
    return TracingSettings({name: value for name, value in values.items() if value})


def logging_settings(env: Environment) -> LoggingSettings:
    level = env.text("LOG_LEVEL", "INFO").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError(
            f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}"
        )
    log_format = env.text("LOG_FORMAT", "auto").lower()
    if log_format not in ("auto", "json", "console"):
        raise ConfigError(f"LOG_FORMAT must be auto, json or console, got {log_format!r}")
    return LoggingSettings(level=level, format=log_format)  # type: ignore[arg-type]


def sqlite_default_url(file_name: str) -> str:
    """An SQLite database under ./var/, the default for a local run."""
    return f"sqlite:///var/{file_name}"


# The metrics endpoint listens on this machine only unless told otherwise: what it shows (queue
# depths, error counts) is for the operator's Prometheus, not for the network at large.
DEFAULT_METRICS_ADDRESS: Final = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Where `/metrics`, `/livez` and `/readyz` are served (port 0: not at all), and how long
    the service's loop may go without progress before `/livez` fails."""

    port: int
    address: str
    liveness_timeout_s: float


def metrics_settings(env: Environment, *, liveness_timeout_s: float) -> MetricsSettings:
    """`METRICS_PORT`, `METRICS_ADDRESS` and `LIVENESS_TIMEOUT_S`; the service gives the
    default of the last, since what counts as stuck depends on its longest legitimate wait."""
    return MetricsSettings(
        port=env.port("METRICS_PORT", 0, allow_zero=True),
        address=env.text("METRICS_ADDRESS", DEFAULT_METRICS_ADDRESS),
        liveness_timeout_s=env.number("LIVENESS_TIMEOUT_S", liveness_timeout_s, minimum=1.0),
    )
