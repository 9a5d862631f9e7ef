"""The composition root: the only place where settings are read and real adapters are built."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from producer_service.after_commit import PublishAfterCommit
from producer_service.metrics import RelayMetrics
from producer_service.outbox_backlog import read_backlog
from producer_service.publisher import ConfirmingPublisher
from producer_service.registration import RegisterUser
from producer_service.relay import OutboxRelay
from producer_service.relay_health import RelayHealth, database_problem
from producer_service.schema import upgrade
from producer_service.settings import ProducerSettings
from producer_service.simulate import PublishesAtCommit, Simulation
from producer_service.storage import SqlOutboxStore, SqlRegistrationStore
from shared.amqp import connection_parameters, url_secrets
from shared.database import create_database_engine, normalise_url
from shared.errors import ConfigError
from shared.logging import configure_logging
from shared.settings import Environment
from shared.topology import ROUTING_KEY

SERVICE = "producer_service"


@dataclass(frozen=True, slots=True)
class RelayMonitoring:
    metrics: RelayMetrics
    health: RelayHealth


@dataclass(slots=True)
class Producer:
    """The wired service; `close()` releases the database connections."""

    settings: ProducerSettings
    engine: Engine
    register: RegisterUser
    outbox: SqlOutboxStore

    def connect_publisher(self) -> ConfirmingPublisher:
        """A confirming publisher, after declaring the topology; `BrokerUnavailable` if down."""
        return ConfirmingPublisher.connect(
            self.settings.broker, confirm_timeout_s=self.settings.relay.confirm_timeout_s
        )

    def relay(
        self, stop: threading.Event | None = None, monitoring: RelayMonitoring | None = None
    ) -> OutboxRelay:
        if monitoring is None:
            return OutboxRelay(self.outbox, self.connect_publisher, self.settings.relay, stop=stop)
        return OutboxRelay(
            self.outbox,
            monitoring.metrics.metered(self.connect_publisher),
            self.settings.relay,
            stop=stop,
            on_progress=monitoring.health.progress,
        )

    def monitoring(self) -> RelayMonitoring:
        """The relay's metrics and health probes, for `shared.metrics_server`."""
        metrics = RelayMetrics()
        metrics.watch_outbox(lambda: read_backlog(self.engine))
        health = RelayHealth(
            self.settings.metrics.liveness_timeout_s,
            broker_connected=lambda: metrics.broker_connected,
            database_problem=lambda: database_problem(self.engine),
        )
        return RelayMonitoring(metrics, health)

    def publish_after_commit(self, stop: threading.Event | None = None) -> PublishAfterCommit:
        relay = self.settings.relay
        return PublishAfterCommit(
            self.outbox,
            self.connect_publisher,
            lease_s=relay.claim_lease_s,
            confirm_timeout_s=relay.confirm_timeout_s,
            batch_size=relay.batch_size,
            stop=stop,
        )

    def simulation(
        self, stop: threading.Event | None = None, *, publish_now: PublishesAtCommit | None = None
    ) -> Simulation:
        return Simulation(
            self.register, self.outbox.count_published, stop=stop, publish_now=publish_now
        )

    def close(self) -> None:
        self.engine.dispose()


def bootstrap(env: Environment | None = None) -> Producer:
    """Read and check every setting, set up logging, open the database, upgrade its schema.

    Raises `ConfigError` for any bad setting before anything is stored: once `register` has
    committed a user, a configuration error could no longer be reported as "nothing stored".
    """
    settings = ProducerSettings.from_env(env or Environment())
    configure_logging(settings.logging, service=SERVICE, secrets=_secrets(settings))
    # Builds the AMQP parameters once, only to check them: the URL (host, port, vhost) and the
    # TLS files. The publisher builds them again when it connects.
    connection_parameters(settings.broker)
    try:
        engine = create_database_engine(settings.database_url)
    except OSError as error:
        # The SQLite file's directory cannot be created: the URL names an unusable path.
        raise ConfigError(
            f"PRODUCER_DATABASE_URL names a path that cannot be used: "
            f"{error.strerror or type(error).__name__}: {error.filename}"
        ) from None
    except (sa.exc.ArgumentError, ValueError):
        # A malformed URL (a port that is not a number, say); the message could quote the URL,
        # password and all.
        raise ConfigError("PRODUCER_DATABASE_URL is not a valid database URL") from None
    upgrade(engine)
    return Producer(
        settings=settings,
        engine=engine,
        register=RegisterUser(SqlRegistrationStore(engine), routing_key=ROUTING_KEY),
        outbox=SqlOutboxStore(engine, lease_s=settings.relay.claim_lease_s),
    )


def _secrets(settings: ProducerSettings) -> list[str]:
    """The passwords in the AMQP and database URLs, as written and percent-decoded."""
    secrets = url_secrets(settings.broker.amqp_url)
    try:
        database_password = sa.engine.make_url(normalise_url(settings.database_url)).password
    except (sa.exc.ArgumentError, ValueError, ConfigError):
        # Malformed: bootstrap reports it when it opens the database, without the URL.
        database_password = None
    if database_password:
        secrets += [str(database_password)]
    return secrets
