"""Opening a connection when AMQP_URL lists nodes that do not answer, against the real broker.

Ports nothing listens on stand for nodes that are down: whatever order the process shuffled the
list into, the connection reaches the one node that answers.
"""

from __future__ import annotations

import socket

import pytest

from shared.amqp import BrokerRefused, BrokerUnavailable, open_connection
from shared.settings import BrokerSettings, Environment, broker_settings
from tests.support.ports import free_port


def _dead_url() -> str:
    return f"amqp://guest:s3cret@127.0.0.1:{free_port()}/%2F"


def _settings(urls: list[str]) -> BrokerSettings:
    return broker_settings(Environment({"AMQP_URL": ",".join(urls)}))


@pytest.mark.parametrize("position", [0, 1, 2])
def test_the_node_that_answers_is_found_wherever_it_is_listed(amqp_url: str, position: int) -> None:
    urls = [_dead_url(), _dead_url()]
    urls.insert(position, amqp_url)
    connection = open_connection(_settings(urls))
    try:
        assert connection.is_open
        assert connection.listed_nodes == 3
    finally:
        connection.close()


def test_no_node_answering_names_each_one_masked() -> None:
    urls = [_dead_url(), _dead_url()]
    with pytest.raises(BrokerUnavailable) as raised:
        open_connection(_settings(urls))
    message = str(raised.value)
    assert message.startswith("cannot connect to any node of AMQP_URL: ")
    assert all(url.replace("s3cret", "***") in message for url in urls)
    assert "s3cret" not in message
    assert not isinstance(raised.value, BrokerRefused)


def test_a_refused_password_is_configuration_even_with_other_nodes_down(amqp_url: str) -> None:
    wrong = amqp_url.replace("guest:guest@", "guest:wrong@")
    with pytest.raises(BrokerRefused, match="ACCESS_REFUSED"):
        open_connection(_settings([_dead_url(), wrong]))


def test_a_node_that_accepts_and_never_answers_is_passed_over(amqp_url: str) -> None:
    # What a SIGSTOPped node looks like from outside: TCP connects, no AMQP answer ever comes.
    with socket.create_server(("127.0.0.1", 0)) as frozen:
        silent = f"amqp://guest:guest@127.0.0.1:{frozen.getsockname()[1]}/%2F"
        with pytest.raises(BrokerUnavailable, match="does not reply"):
            open_connection(_settings([silent]))
        connection = open_connection(_settings([silent, amqp_url]))
        connection.close()
