"""The composition root: the only place where settings are read and real adapters are built."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from producer_service.ports import OutboxStore, RegistrationStore
from producer_service.publisher import ConfirmingPublisher
from producer_service.registration import RegisterUser
from producer_service.relay import OutboxRelay, PublisherFactory
from producer_service.schema import upgrade
from producer_service.settings import ProducerSettings
from producer_service.simulate import Simulation
from producer_service.storage import SqlOutboxStore, SqlRegistrationStore, relax_commits
from shared.amqp import connection_parameters, url_secrets
from shared.database import create_database_engine, normalise_url
from shared.errors import ConfigError
from shared.logging import configure_logging
from shared.settings import Environment
from shared.topology import ROUTING_KEY

SERVICE = "producer_service"


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
        self, stop: threading.Event | None = None, *, commits: threading.Event | None = None
    ) -> OutboxRelay:
        return OutboxRelay(
            self.outbox, self.connect_publisher, self.settings.relay, stop=stop, commits=commits
        )

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
    try:
        engine = create_database_engine(database_url)
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
