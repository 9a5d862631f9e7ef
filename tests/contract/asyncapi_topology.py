"""The broker topology as docs/asyncapi.yaml describes it, and as a real broker lists it.

Both sides come out in one shape, so a test can compare them whole: exchanges with their type
and flags, queues with their flags and `x-` arguments, and (exchange, queue, routing key)
bindings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.support.broker import BrokerAdmin


@dataclass(frozen=True, slots=True)
class Exchange:
    type: str
    durable: bool
    auto_delete: bool


@dataclass(frozen=True, slots=True)
class Queue:
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: Mapping[str, Any]


@dataclass(slots=True)
class Topology:
    exchanges: dict[str, Exchange] = field(default_factory=dict)
    queues: dict[str, Queue] = field(default_factory=dict)
    bindings: set[tuple[str, str, str]] = field(default_factory=set)


def documented_topology(document: Mapping[str, Any]) -> tuple[Topology, set[tuple[str, str]]]:
    """The document's topology, and the (exchange, routing key) pairs its senders publish to."""
    topology = Topology()
    publish_targets: set[tuple[str, str]] = set()
    for name, channel in document["channels"].items():
        amqp = channel["bindings"]["amqp"]
        if amqp["is"] == "routingKey":
            exchange = amqp["exchange"]
            described = Exchange(exchange["type"], exchange["durable"], exchange["autoDelete"])
            previous = topology.exchanges.setdefault(exchange["name"], described)
            assert previous == described, f"channel {name} describes {exchange['name']} anew"
            publish_targets.add((exchange["name"], channel["address"]))
            continue
        queue = amqp["queue"]
        assert channel["address"] == queue["name"], f"channel {name}: address is not the queue"
        assert queue["name"] not in topology.queues, f"queue {queue['name']} described twice"
        topology.queues[queue["name"]] = Queue(
            durable=queue["durable"],
            exclusive=queue["exclusive"],
            auto_delete=queue["autoDelete"],
            arguments=dict(amqp.get("x-arguments", {})),
        )
        for binding in amqp.get("x-bindings", []):
            topology.bindings.add((binding["exchange"], queue["name"], binding["routingKey"]))
    return topology, publish_targets


def vhosts_in_document(document: Mapping[str, Any]) -> set[str]:
    found = set()
    for channel in document["channels"].values():
        amqp = channel["bindings"]["amqp"]
        found.add((amqp.get("exchange") or amqp.get("queue"))["vhost"])
    return found


def broker_topology(admin: BrokerAdmin, vhost: str) -> Topology:
    """What the broker holds in `vhost`, apart from its built-in exchanges and bindings."""
    topology = Topology()
    for row in _listing(admin, "list_exchanges", vhost, "name type durable auto_delete"):
        if row["name"] == "" or row["name"].startswith("amq."):
            continue  # the default exchange and the amq.* ones exist in every vhost
        topology.exchanges[row["name"]] = Exchange(row["type"], row["durable"], row["auto_delete"])
    for row in _listing(
        admin, "list_queues", vhost, "name durable auto_delete exclusive arguments"
    ):
        topology.queues[row["name"]] = Queue(
            durable=row["durable"],
            # The exclusive owner's pid, or "" when no connection owns the queue.
            exclusive=row["exclusive"] not in ("", False),
            auto_delete=row["auto_delete"],
            arguments={name: value for name, _type, value in row["arguments"]},
        )
    columns = "source_name destination_name destination_kind routing_key"
    for row in _listing(admin, "list_bindings", vhost, columns):
        if row["source_name"] == "":
            continue  # every queue's implicit binding to the default exchange
        assert row["destination_kind"] == "queue", row
        topology.bindings.add((row["source_name"], row["destination_name"], row["routing_key"]))
    return topology


def _listing(admin: BrokerAdmin, command: str, vhost: str, columns: str) -> list[dict[str, Any]]:
    output = admin.ctl(command, "-q", "-p", vhost, *columns.split(), "--formatter", "json")
    rows: list[dict[str, Any]] = json.loads(output)
    return rows
