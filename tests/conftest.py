"""Fixtures every test folder shares: the broker (a private vhost per test), SMTP, PostgreSQL.

A test that needs a service that cannot be reached or started fails with the reason; it never
skips, so a green run means the integration tests really ran.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytest

from tests.support.broker import BrokerAdmin, BrokerUnreachable, new_vhost_name, session_broker
from tests.support.postgres import (
    PostgresUnreachable,
    admin_postgres_url,
    create_database,
    drop_database,
)
from tests.support.rabbit_install import ROOT_VARIABLE, RabbitInstallError, configured_install
from tests.support.rabbit_node import private_rabbit
from tests.support.smtp import SmtpTestServer

# A RabbitMQ node of the test's own, for tests that stop, kill or reconfigure the broker.
__all__ = ["private_rabbit"]


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """Put the root logger back after a test that ran a command's `main` in this process.

    `configure_logging` replaces the root handlers, pytest's capture included; left so, every
    later test's library logs (aiosmtpd's, for one) went to the terminal as JSON lines.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def pytest_report_header() -> str:
    """Which RabbitMQ the private nodes (and, with TEST_RABBITMQ_ROOT, the shared broker) run."""
    try:
        install = configured_install()
    except RabbitInstallError as error:
        return f"RabbitMQ: {error}"
    where = f"from {ROOT_VARIABLE}={install.root}" if install.in_own_root else "installed"
    return f"RabbitMQ for private nodes: {install.version} ({where})"


@pytest.fixture(scope="session")
def broker_admin() -> Iterator[BrokerAdmin]:
    with contextlib.ExitStack() as stack:
        try:
            admin = stack.enter_context(session_broker())
        except BrokerUnreachable as error:
            pytest.fail(str(error), pytrace=False)
        yield admin
        admin.finish_deletions()


@pytest.fixture
def vhost(broker_admin: BrokerAdmin) -> Iterator[str]:
    """A fresh, empty virtual host on the test broker, deleted after the test."""
    name = new_vhost_name()
    broker_admin.add_vhost(name)
    yield name
    broker_admin.delete_vhost_in_background(name)


@pytest.fixture
def amqp_url(broker_admin: BrokerAdmin, vhost: str) -> str:
    """The AMQP URL of this test's own virtual host."""
    return broker_admin.url_for(vhost)


@pytest.fixture
def smtp_server() -> Iterator[SmtpTestServer]:
    server = SmtpTestServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    try:
        return admin_postgres_url()
    except PostgresUnreachable as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    name, url = create_database(postgres_admin_url)
    yield url
    drop_database(postgres_admin_url, name)
