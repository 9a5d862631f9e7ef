"""The registration service's settings, read once from the environment in the composition root.

Every variable, its default and its meaning are in docs/CONTRACT.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.settings import (
    BrokerSettings,
    Environment,
    LoggingSettings,
    MetricsSettings,
    TracingSettings,
    broker_settings,
    logging_settings,
    metrics_settings,
    sqlite_default_url,
    tracing_settings,
)

DEFAULT_BATCH_SIZE = 500
DEFAULT_POLL_INTERVAL_S = 1.0
DEFAULT_RETENTION_S = 7 * 24 * 3600
# A broker in a memory alarm never confirms; the relay gives up on the batch after this long, and
# the events stay pending for the next pass.
DEFAULT_CONFIRM_TIMEOUT_S = 10.0
# A claimed batch is held through at most two confirm waits (its own and the batch's before
# it), closing a timed-out connection and the marks' database writes. Three confirm waits and a
# margin keep a live relay's claim from being taken over; a crashed relay's rows are claimable
# again 45 s later with the defaults. A takeover after a long database stall publishes a batch
# twice (the worker absorbs the duplicate), never loses one: marks need the claim's token.
_LEASE_CONFIRM_WAITS = 3
_LEASE_MARGIN_S = 15.0
# The relay reports progress at least every 31 s while it waits (the longest wait between two
# connection attempts, jitter included), plus what one attempt takes: twice that is stuck.
DEFAULT_LIVENESS_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class RelaySettings:
    batch_size: int
    """Events claimed, published and marked together: one read, one confirm wait, one write."""
    poll_interval_s: float
    """Pause when the outbox holds nothing publishable."""
    retention_s: int
    """Published rows older than this are deleted; the outbox is not an archive."""
    confirm_timeout_s: float
    """How long to wait for the broker to confirm a batch before treating it as failed."""

    @property
    def claim_lease_s(self) -> float:
        """How long a claimed batch stays reserved for its relay before another may take it."""
        return _LEASE_CONFIRM_WAITS * self.confirm_timeout_s + _LEASE_MARGIN_S


@dataclass(frozen=True, slots=True)
class ProducerSettings:
    database_url: str
    broker: BrokerSettings
    logging: LoggingSettings
    relay: RelaySettings
    metrics: MetricsSettings
    tracing: TracingSettings = field(default_factory=TracingSettings)

    @classmethod
    def from_env(cls, env: Environment) -> ProducerSettings:
        """Read and check every setting; a bad value raises `ConfigError` naming the variable."""
        return cls(
            database_url=env.database_url(
                "PRODUCER_DATABASE_URL", sqlite_default_url("producer.sqlite3")
            ),
            broker=broker_settings(env),
            logging=logging_settings(env),
            relay=_relay_settings(env),
            metrics=metrics_settings(env, liveness_timeout_s=DEFAULT_LIVENESS_TIMEOUT_S),
            tracing=tracing_settings(env),
        )


def _relay_settings(env: Environment) -> RelaySettings:
    return RelaySettings(
        batch_size=env.integer("RELAY_BATCH_SIZE", DEFAULT_BATCH_SIZE, minimum=1),
        poll_interval_s=env.number("RELAY_POLL_INTERVAL_S", DEFAULT_POLL_INTERVAL_S, minimum=0.01),
        retention_s=env.integer("RELAY_RETENTION_S", DEFAULT_RETENTION_S, minimum=0),
        confirm_timeout_s=env.number(
            "RELAY_CONFIRM_TIMEOUT_S", DEFAULT_CONFIRM_TIMEOUT_S, minimum=1.0
        ),
    )
