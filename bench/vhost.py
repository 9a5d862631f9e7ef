"""A private virtual host on the shared broker for each benchmark section.

The topology names are fixed by the contract, and other people's tests use the same broker:
each section gets a vhost of its own, deleted afterwards, so it neither sees nor disturbs
anybody else's queues. The administration (rabbitmqctl locally, or in the compose container)
is the test suite's own helper, so both find the broker the same way (TEST_AMQP_URL).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from tests.support.broker import BrokerAdmin, connect_test_broker, new_vhost_name


@cache
def broker_admin() -> BrokerAdmin:
    """The administration of the broker under test, found once per run."""
    return connect_test_broker()


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
