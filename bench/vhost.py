"""A private virtual host on the shared broker for each benchmark section.

The topology names are fixed by the contract, and other people's tests use the same broker:
each section gets a vhost of its own, deleted afterwards, so it neither sees nor disturbs
anybody else's queues. The administration (rabbitmqctl locally, or in the compose container)
is the test suite's own helper, so both find the broker the same way (TEST_AMQP_URL). A section
that starts a broker of its own puts it in place of the shared one with `broker_under_test`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from tests.support.broker import BrokerAdmin, connect_test_broker, new_vhost_name

# Brokers a section started for itself (the brokers section's RabbitMQ 4.0 node and cluster),
# innermost last: while one is here, every private vhost is made on it.
_started_by_a_section: list[BrokerAdmin] = []


@cache
def _shared_broker_admin() -> BrokerAdmin:
    return connect_test_broker()


def broker_admin() -> BrokerAdmin:
    """The administration of the broker under test: the shared one (found once per run), or
    the one a section put in place with `broker_under_test`."""
    if _started_by_a_section:
        return _started_by_a_section[-1]
    return _shared_broker_admin()


@contextmanager
def broker_under_test(admin: BrokerAdmin) -> Iterator[None]:
    """Inside the block, `private_vhost` makes its vhosts on `admin`'s broker."""
    _started_by_a_section.append(admin)
    try:
        yield
    finally:
        _started_by_a_section.remove(admin)


@contextmanager
def private_vhost(prefix: str = "bench") -> Iterator[str]:
    """Yield the AMQP URL of a new, empty vhost; the vhost is deleted on exit."""
    admin = broker_admin()
    name = new_vhost_name(prefix)
    url = admin.add_vhost(name)
    try:
        yield url
    finally:
        admin.delete_vhost(name)
