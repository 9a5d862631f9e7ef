"""AMQP_URL as a list of a cluster's nodes: splitting, masking, the order nodes are tried in."""

from __future__ import annotations

import random

import pytest

from shared import topology
from shared.amqp import connection_parameters, mask_url, url_secrets
from shared.errors import ConfigError
from shared.failover import NodeRotation
from shared.settings import Environment, broker_settings

NODES = [f"amqp://u:p@h{number}:5672/%2F" for number in (1, 2, 3)]


def test_a_list_is_split_and_trimmed() -> None:
    settings = broker_settings(Environment({"AMQP_URL": " , ".join(NODES) + ","}))
    assert settings.urls == tuple(NODES)


def test_every_url_of_a_list_must_be_amqp() -> None:
    with pytest.raises(ConfigError, match="AMQP_URL must start with amqp:// or amqps://"):
        broker_settings(Environment({"AMQP_URL": f"{NODES[0]},http://h2/"}))


def test_a_bad_url_anywhere_in_the_list_is_reported_at_once() -> None:
    settings = broker_settings(Environment({"AMQP_URL": f"{NODES[0]},amqp://u:p@h2:port/"}))
    with pytest.raises(ConfigError, match="AMQP_URL is not a valid AMQP URL") as raised:
        connection_parameters(settings)
    assert "p@h2" not in str(raised.value)


def test_every_password_of_a_list_is_masked_and_redacted() -> None:
    urls = "amqp://u:one@h1/%2F,amqp://u:tw%40o@h2/%2F"
    assert mask_url(urls) == "amqp://u:***@h1/%2F,amqp://u:***@h2/%2F"
    assert url_secrets(urls) == ["one", "tw%40o", "tw@o"]


def test_the_rotation_tries_each_node_once_in_a_shuffled_order() -> None:
    rotation = NodeRotation(NODES, shuffle=random.Random(7))
    first = rotation.to_try()
    assert sorted(first) == sorted(NODES)
    assert rotation.current() == first[0]
    orders = {
        tuple(NodeRotation(NODES, shuffle=random.Random(seed)).to_try()) for seed in range(30)
    }
    assert len(orders) > 1  # not always the order written


def test_a_new_connection_starts_after_the_node_last_reached() -> None:
    rotation = NodeRotation(NODES, shuffle=random.Random(1))
    order = rotation.to_try()
    rotation.reached(order[1])
    assert rotation.current() == order[1]
    # The node the lost connection was on is tried last.
    assert rotation.to_try() == [order[2], order[0], order[1]]


@pytest.mark.parametrize(("listed", "replicas"), [(1, None), (2, None), (3, 3), (5, 3)])
def test_quorum_queues_get_three_replicas_on_a_cluster(listed: int, replicas: int | None) -> None:
    assert topology.quorum_replicas(listed) == replicas
    arguments = topology.main_queue_arguments(topology.quorum_replicas(listed))
    assert arguments.get("x-quorum-initial-group-size") == replicas
    retry = topology.retry_queue_arguments(5, topology.quorum_replicas(listed))
    assert retry.get("x-quorum-initial-group-size") == replicas
