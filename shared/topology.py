"""Names of the exchanges and queues, and their idempotent declaration.

Every name derives from the two contract names, so the worker's retry and dead-letter plumbing
can be found by prefix (`email_consumer.user_registered.`). Both services declare the same
topology with the same arguments: RabbitMQ refuses a redeclaration whose arguments differ, and
that refusal is how a service starting on a broker whose topology is not its own finds out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import pika.exceptions
from pika.exchange_type import ExchangeType

from shared.display import printable, quoted
from shared.errors import ConfigError, TransientError
from shared.logging import get_logger

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

_log = get_logger(__name__)

EXCHANGE: Final = "user.events"
ROUTING_KEY: Final = "user.registered"
QUEUE: Final = "email_consumer.user_registered"
DEAD_LETTER_QUEUE: Final = f"{QUEUE}.dlq"
DEAD_LETTER_EXCHANGE: Final = f"{QUEUE}.dlx"
RETRY_EXCHANGE: Final = f"{QUEUE}.retry"
# Deliveries of one message (crashes, requeues) before the broker dead-letters it itself, so an
# event that kills the worker every time cannot loop forever. Set explicitly, so RabbitMQ 4's
# default of 20 for a quorum queue declared without one never decides instead. (The retry queues
# have none on purpose: nothing consumes from them, so they count no delivery on any version;
# their messages leave by TTL only.)
DELIVERY_LIMIT: Final = 10
DEFAULT_RETRY_DELAYS_S: Final = (5, 30, 300)
_ACCESS_REFUSED: Final = 403
_NOT_FOUND: Final = 404
_PRECONDITION_FAILED: Final = 406
# RabbitMQ's NOT_FOUND text for a classic queue whose node is down (seen on 3.10.8; 4.0.5
# answers a no-wait declaration of it without complaint, see _declare_without_counts).
_HOME_NODE_DOWN: Final = "is down or inaccessible"


def retry_queue_name(delay_s: int) -> str:
    """The TTL queue that holds an event for `delay_s` seconds before it returns to the queue."""
    return f"{QUEUE}.retry.{delay_s}s"


# Quorum queues dead-letter at most once unless told otherwise; at-least-once keeps a message
# until the dead-letter target confirmed it (it requires the reject-publish overflow mode).
_AT_LEAST_ONCE_DEAD_LETTERING: Final = {
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


# Replicas of a new quorum queue on a cluster of at least three nodes: a majority survives one
# node down, and a bigger cluster does not copy every message onto every node (RabbitMQ's
# default without the argument).
CLUSTER_QUORUM_REPLICAS: Final = 3
_REPLICAS_ARGUMENT: Final = "x-quorum-initial-group-size"


def quorum_replicas(listed_nodes: int) -> int | None:
    """The explicit initial replica count for a cluster whose AMQP_URL lists `listed_nodes`
    nodes; None (RabbitMQ's default, every node) below three."""
    return CLUSTER_QUORUM_REPLICAS if listed_nodes >= CLUSTER_QUORUM_REPLICAS else None


def _replica_argument(replicas: int | None) -> dict[str, Any]:
    return {} if replicas is None else {_REPLICAS_ARGUMENT: replicas}


def main_queue_arguments(replicas: int | None = None) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        **_AT_LEAST_ONCE_DEAD_LETTERING,
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
        **_replica_argument(replicas),
    }


def retry_queue_arguments(delay_s: int, replicas: int | None = None) -> dict[str, Any]:
    # When the TTL expires the broker dead-letters the message through the default exchange
    # straight back into the main queue: delayed redelivery without any broker plugin.
    return {
        "x-queue-type": "quorum",
        **_AT_LEAST_ONCE_DEAD_LETTERING,
        "x-message-ttl": delay_s * 1000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": QUEUE,
        **_replica_argument(replicas),
    }


def dead_letter_queue_arguments() -> dict[str, Any]:
    """A classic queue, on purpose: the DLQ tools list it by taking messages and handing them
    back, and only a classic queue takes that without a trace on every RabbitMQ version. It
    puts a returned message back in its place (order kept), counts no deliveries and has no
    delivery limit, so no number of listings can drop anything. A quorum queue counts each
    return as a delivery, and RabbitMQ 4 gives it a default limit of 20 past which it drops the
    message (its DLQ has no DLQ). The `-1` that disables the limit on 4.x is no way out:
    3.10 accepts it and then drops every message at its first return (measured 2026-12-01:
    3.10.8 emptied such a queue at the first listing, 4.0.5 kept it through 25).
    Declared explicitly: a 4.x vhost may make quorum the default type.
    """
    return {"x-queue-type": "classic"}


class TopologyMissing(TransientError):
    """The broker lacks part of the topology and this user may not declare it."""


class TopologyMismatch(ConfigError):
    """An exchange or queue exists with other arguments than this version declares.

    Configuration, not an outage: running on it would mean another delivery limit (RabbitMQ 4
    gives 20 to a quorum queue declared without one), another dead-letter target or queue type
    than the code and docs/CONTRACT.md promise. A service refuses to start on it.
    """


# RabbitMQ's PRECONDITION_FAILED text for a redeclaration (3.10 and 4.x alike), e.g.
# "inequivalent arg 'x-delivery-limit' for queue 'q' in vhost '/': received '10' but current
# is '20'"; the vhost is left out of the line, the URL says it.
_INEQUIVALENT: Final = re.compile(
    r"inequivalent arg '(?P<argument>[^']*)' for (?P<kind>queue|exchange) '(?P<name>[^']*)'"
    r" in vhost '[^']*': (?P<detail>.*)"
)
_DETAIL_LIMIT: Final = 160


def mismatch_message(reply_text: str) -> str:
    """One line saying which entity and which argument differ, from the broker's refusal."""
    found = _INEQUIVALENT.search(reply_text)
    if found is None:
        what = printable(reply_text.removeprefix("PRECONDITION_FAILED - "), _DETAIL_LIMIT)
        return f"the broker's topology differs from this version's: {what}"
    return (
        f"{found['kind']} {quoted(found['name'], 80)} differs from this version's topology "
        f"({printable(found['argument'], 40)}: {printable(found['detail'], _DETAIL_LIMIT)}); "
        "re-create it as docs/CONTRACT.md lists"
    )


def declare_topology(
    channel: BlockingChannel,
    *,
    retry_delays_s: Sequence[int] = DEFAULT_RETRY_DELAYS_S,
    warn_old_dead_letter_queue: bool = True,
) -> None:
    """Make sure exchanges, queues and bindings exist as this version declares them.

    Declaring is idempotent, and RabbitMQ compares every argument of an existing exchange or
    queue with the declaration (PRECONDITION_FAILED when one differs, measured on 3.10.8 and
    4.0.5 for each argument this module sets): declaring is also the start-up check, and a
    difference raises `TopologyMismatch`. A least-privilege user (see
    docker/rabbitmq/definitions.json) may not declare anything, even what exists: for it the
    names are checked passively, and the arguments are those of the definitions file, which
    tests/security/test_broker_permissions.py holds equal to this module's. Each step runs on a
    channel of its own, because a refusal closes the channel it happens on and the caller's
    must stay open. `warn_old_dead_letter_queue=False`: for the DLQ tools, which refuse or
    migrate a DLQ declared the old way themselves.
    """
    connection = channel.connection
    work = connection.channel()
    try:
        # A shared.amqp.BrokerConnection knows how many nodes AMQP_URL lists; others count one.
        replicas = quorum_replicas(getattr(connection, "listed_nodes", 1))
        _declare(work, retry_delays_s, replicas, warn_old_dead_letter_queue)
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == _PRECONDITION_FAILED:
            raise TopologyMismatch(mismatch_message(error.reply_text)) from None
        if error.reply_code != _ACCESS_REFUSED:
            raise
        if not _all_exist(connection, retry_delays_s):
            raise TopologyMissing(
                "the topology is incomplete and this user may not declare it; "
                "load docker/rabbitmq/definitions.json into the broker"
            ) from None
        return
    work.close()


def bindings(retry_delays_s: Sequence[int]) -> list[tuple[str, str, str]]:
    """Every (exchange, queue, routing key) binding of the topology."""
    return [
        (EXCHANGE, QUEUE, ROUTING_KEY),
        (DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, DEAD_LETTER_QUEUE),
        # `dlq replay` publishes here with the queue's own name as routing key: straight back
        # to the queue, without the worker needing write access to the default exchange.
        (RETRY_EXCHANGE, QUEUE, QUEUE),
        *((RETRY_EXCHANGE, retry_queue_name(d), retry_queue_name(d)) for d in retry_delays_s),
    ]


def _declare(
    channel: BlockingChannel,
    retry_delays_s: Sequence[int],
    replicas: int | None,
    warn_old_dead_letter_queue: bool,
) -> None:
    channel.exchange_declare(EXCHANGE, exchange_type=ExchangeType.topic, durable=True)
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, exchange_type=ExchangeType.direct, durable=True)
    channel.exchange_declare(RETRY_EXCHANGE, exchange_type=ExchangeType.direct, durable=True)
    dead_letter_queue_up = _declare_dead_letter_queue(
        channel.connection, warn_old=warn_old_dead_letter_queue
    )
    _declare_quorum_queue(channel.connection, QUEUE, main_queue_arguments(replicas))
    for delay_s in retry_delays_s:
        _declare_quorum_queue(
            channel.connection, retry_queue_name(delay_s), retry_queue_arguments(delay_s, replicas)
        )
    for exchange, queue, routing_key in bindings(retry_delays_s):
        if queue != DEAD_LETTER_QUEUE or dead_letter_queue_up:
            channel.queue_bind(queue, exchange, routing_key=routing_key)


def _declare_quorum_queue(
    connection: BlockingConnection, queue: str, arguments: dict[str, Any]
) -> None:
    """Declare `queue` as this version does; every argument is compared but the replica count.

    RabbitMQ refuses a redeclaration whose `x-quorum-initial-group-size` differs, yet that
    count only matters when a queue is created: a queue declared before AMQP_URL listed a
    cluster, or by a service listing other nodes, must not stop this one. Such a refusal is
    answered by declaring again without the count; if the queue has a count of its own, that
    second refusal names it too, and the rest cannot be compared from here.
    """
    attempts = (arguments, {k: v for k, v in arguments.items() if k != _REPLICAS_ARGUMENT})
    for attempt in attempts:
        channel = connection.channel()
        try:
            channel.queue_declare(queue, durable=True, arguments=attempt)
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code != _PRECONDITION_FAILED or _REPLICAS_ARGUMENT not in str(
                error.reply_text
            ):
                raise
            continue
        channel.close()
        return


def _declare_dead_letter_queue(connection: BlockingConnection, *, warn_old: bool) -> bool:
    """Declare the DLQ; one declared the old way (a quorum queue) is left as it is. False when
    the DLQ exists but its node is down.

    Redeclaring it with other arguments fails (PRECONDITION_FAILED), and replacing it would
    have to move its messages: that is the operator's `email-consumer dlq` tools' job (see
    `DeadLetterQueue.migrate`), never a side effect of a service starting.

    A classic queue lives on one node of a cluster: while that node is down RabbitMQ answers
    NOT_FOUND for it. The services must not wait for that node (the worker would stop
    delivering every email for it); a dead-letter copy published meanwhile is refused and its
    original stays in the queue, so nothing is lost.
    """
    channel = connection.channel()
    try:
        _declare_without_counts(channel, DEAD_LETTER_QUEUE, dead_letter_queue_arguments())
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == _NOT_FOUND and _HOME_NODE_DOWN in str(error.reply_text):
            _log.warning(
                "the dead-letter queue's node is down; dead-lettering waits for it",
                queue=DEAD_LETTER_QUEUE,
            )
            return False
        if error.reply_code != _PRECONDITION_FAILED:
            raise
        if warn_old:
            _log.warning(
                "the dead-letter queue was declared by an older version (a quorum queue); "
                "run `email-consumer dlq migrate` before listing it",
                queue=DEAD_LETTER_QUEUE,
            )
        return True
    channel.close()
    return True


def _declare_without_counts(
    channel: BlockingChannel, queue: str, arguments: dict[str, Any] | None, *, passive: bool = False
) -> None:
    """queue.declare with no-wait, then a round trip on the same channel to hear a refusal.

    A synchronous declaration of an existing queue asks the queue's process for its message and
    consumer counts. When that process is on a node that is down (a classic queue lives on one
    node), RabbitMQ 4.0.5 retries for about 66 s and then answers NOT_FOUND "due to timeout";
    a worker reconnecting after the loss of that node stalled for that long at every attempt
    (CI, 2026-12-01). With no-wait RabbitMQ checks the name and every argument against the
    queue's record only, and asks its process nothing: a difference still closes the channel,
    and basic.qos (harmless on a channel that consumes nothing) is answered after it, so the
    refusal surfaces here. 3.10.8 refuses the no-wait form at once with its "home node ... is
    down" text, as it does the synchronous one (measured on two-node clusters of each version,
    tests/faults/test_cluster_dead_letter_queue.py).

    pika's BlockingChannel offers no no-wait declaration; its underlying Channel does (no
    callback means no-wait), hence `_impl`.
    """
    channel._impl.queue_declare(
        queue, passive=passive, durable=True, arguments=arguments, callback=None
    )
    channel.basic_qos(prefetch_count=0)


def dead_letter_queue_is_current(connection: BlockingConnection) -> bool | None:
    """True when the DLQ has today's arguments, False when declared the old way, None when
    this user may not tell (redeclaring needs the configure permission)."""
    channel = connection.channel()
    try:
        channel.queue_declare(
            DEAD_LETTER_QUEUE, durable=True, arguments=dead_letter_queue_arguments()
        )
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == _PRECONDITION_FAILED:
            return False
        if error.reply_code == _ACCESS_REFUSED:
            return None
        raise
    channel.close()
    return True


def _all_exist(connection: BlockingConnection, retry_delays_s: Sequence[int]) -> bool:
    return _exist(
        connection,
        exchanges=(EXCHANGE, DEAD_LETTER_EXCHANGE, RETRY_EXCHANGE),
        queues=(QUEUE, DEAD_LETTER_QUEUE, *(retry_queue_name(d) for d in retry_delays_s)),
    )


def _exist(
    connection: BlockingConnection, *, exchanges: Sequence[str], queues: Sequence[str]
) -> bool:
    # A passive declaration of something missing closes its channel: a channel of its own.
    channel = connection.channel()
    try:
        for exchange in exchanges:
            channel.exchange_declare(exchange, passive=True)
        for queue in queues:
            # Existence only: the counts of a passive declaration would wait for the node of a
            # classic queue (_declare_without_counts).
            _declare_without_counts(channel, queue, None, passive=True)
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == _NOT_FOUND:
            return False
        raise
    channel.close()
    return True
