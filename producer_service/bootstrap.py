"""The composition root: the only place where settings are read and real adapters are built."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from producer_service.metrics import RelayMetrics
from producer_service.outbox_backlog import read_backlog
from producer_service.ports import OutboxStore, RegistrationStore
from producer_service.publisher import ConfirmingPublisher
from producer_service.registration import RegisterUser
from producer_service.relay import OutboxRelay, PublisherFactory
from producer_service.relay_health import RelayHealth, database_problem
from producer_service.schema import upgrade
from producer_service.settings import ProducerSettings
from producer_service.simulate import Simulation
from producer_service.storage import SqlOutboxStore, SqlRegistrationStore, relax_commits
from shared.amqp import connection_parameters, url_secrets
from shared.database import create_database_engine, naming_the_variable, normalise_url
from shared.errors import ConfigError
from shared.logging import configure_logging
from shared.settings import Environment
from shared.topology import ROUTING_KEY
from shared.tracing import configure_tracing

SERVICE = "producer_service"
DATABASE_VARIABLE = "PRODUCER_DATABASE_URL"


@dataclass(frozen=True, slots=True)
class RelayMonitoring:
    metrics: RelayMetrics
    health: RelayHealth


@dataclass(slots=True)
class Producer:
    """The wired service; `close()` releases the database connections."""

    settings: ProducerSettings
    register: RegisterUser
    outbox: OutboxStore
    connect_publisher: PublisherFactory
    """A publisher ready to publish (the topology declared), or `BrokerUnavailable`."""
    engines: tuple[Engine, ...] = ()
    """The registrations' engine, then the outbox's; none when the stores were passed in."""

    @property
    def engine(self) -> Engine | None:
        """The registrations' engine, whose commits are durable."""
        return self.engines[0] if self.engines else None

    def relay(
        self,
        stop: threading.Event | None = None,
        *,
        commits: threading.Event | None = None,
        monitoring: RelayMonitoring | None = None,
    ) -> OutboxRelay:
        if monitoring is None:
            return OutboxRelay(
                self.outbox, self.connect_publisher, self.settings.relay, stop=stop, commits=commits
            )
        return OutboxRelay(
            self.outbox,
            monitoring.metrics.metered(self.connect_publisher),
            self.settings.relay,
            stop=stop,
            commits=commits,
            on_progress=monitoring.health.progress,
        )

    def monitoring(self) -> RelayMonitoring:
        """The relay's metrics and health probes, for `shared.metrics_server`."""
        engine = self.engine
        if engine is None:
            raise ConfigError("the relay's metrics need the database it was built with")
        metrics = RelayMetrics()
        metrics.watch_outbox(lambda: read_backlog(engine))
        health = RelayHealth(
            self.settings.metrics.liveness_timeout_s,
            broker_connected=lambda: metrics.broker_connected,
            database_problem=lambda: database_problem(engine),
        )
        return RelayMonitoring(metrics, health)

    def simulation(
        self, stop: threading.Event | None = None, *, commits: threading.Event | None = None
    ) -> Simulation:
        return Simulation(self.register, self.outbox.count_published, stop=stop, commits=commits)

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()


def bootstrap(
    env: Environment | None = None,
    *,
    stores: tuple[RegistrationStore, OutboxStore] | None = None,
    connect: PublisherFactory | None = None,
) -> Producer:
    """Read and check every setting, set up logging, open the database, upgrade its schema.

    Raises `ConfigError` for any bad setting before anything is stored: once `register` has
    committed a user, a configuration error could no longer be reported as "nothing stored".
    Unit tests pass in-memory `stores` and `connect` (no database is opened then).
    """
    settings = ProducerSettings.from_env(env or Environment())
    configure_logging(settings.logging, service=SERVICE, secrets=_secrets(settings))
    configure_tracing(settings.tracing, service=SERVICE)  # only if an OTEL_* variable asks
    # Builds the AMQP parameters once, only to check them: the URL (host, port, vhost) and the
    # TLS files. The publisher builds them again when it connects.
    connection_parameters(settings.broker)
    engines: tuple[Engine, ...] = ()
    if stores is None:
        engines = (_open_database(settings.database_url), _outbox_engine(settings.database_url))
        stores = (
            SqlRegistrationStore(engines[0]),
            SqlOutboxStore(engines[1], lease_s=settings.relay.claim_lease_s),
        )
    if connect is None:
        connect = functools.partial(
            ConfirmingPublisher.connect,
            settings.broker,
            confirm_timeout_s=settings.relay.confirm_timeout_s,
        )
    registrations, outbox = stores
    return Producer(
        settings=settings,
        register=RegisterUser(registrations, routing_key=ROUTING_KEY),
        outbox=outbox,
        connect_publisher=connect,
        engines=engines,
    )


def _outbox_engine(database_url: str) -> Engine:
    # The same database; its claims and marks need not wait for the disk (`relax_commits`).
    return relax_commits(create_database_engine(database_url))


def _open_database(database_url: str) -> Engine:
    with naming_the_variable(DATABASE_VARIABLE, database_url):
        engine = create_database_engine(database_url)
        upgrade(engine)
    return engine


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
