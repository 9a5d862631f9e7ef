"""The registration service's settings, read once from the environment in the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import (
    BrokerSettings,
    Environment,
    LoggingSettings,
    MetricsSettings,
    broker_settings,
    logging_settings,
    metrics_settings,
    sqlite_default_url,
)

DEFAULT_BATCH_SIZE = 500
DEFAULT_POLL_INTERVAL_S = 1.0
DEFAULT_RETENTION_S = 7 * 24 * 3600
# A broker in a memory alarm never confirms; the relay gives up on the batch after this long, and
# the events stay pending for the next pass.
DEFAULT_CONFIRM_TIMEOUT_S = 10.0
# A claimed batch is held while the batch before it is confirmed and marked, then through its
# own confirm wait and marks: two confirm waits at most (a wait that times out fails every batch
# on the wire at once), closing the connection after a timeout (up to 5 s), and the marks' waits
# for the database. The lease allows three confirm waits and a margin, so a live relay's claim
# is not taken over unless its database stalls for long (then a second relay may publish the
# batch again: a duplicate the worker absorbs, never a loss, as marks are guarded by the claim's
# token); a crashed relay's rows are claimable again once it ends (45 s with the defaults).
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

    @classmethod
    def from_env(cls, env: Environment) -> ProducerSettings:
        return cls(
            database_url=env.database_url(
                "PRODUCER_DATABASE_URL", sqlite_default_url("producer.sqlite3")
            ),
            broker=broker_settings(env),
            logging=logging_settings(env),
            relay=RelaySettings(
                batch_size=env.integer("RELAY_BATCH_SIZE", DEFAULT_BATCH_SIZE, minimum=1),
                poll_interval_s=env.number(
                    "RELAY_POLL_INTERVAL_S", DEFAULT_POLL_INTERVAL_S, minimum=0.01
                ),
                retention_s=env.integer("RELAY_RETENTION_S", DEFAULT_RETENTION_S, minimum=0),
                confirm_timeout_s=env.number(
                    "RELAY_CONFIRM_TIMEOUT_S", DEFAULT_CONFIRM_TIMEOUT_S, minimum=1.0
                ),
            ),
            metrics=metrics_settings(env, liveness_timeout_s=DEFAULT_LIVENESS_TIMEOUT_S),
        )
