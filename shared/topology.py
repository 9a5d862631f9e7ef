"""Names of the exchanges and queues, and their idempotent declaration.

Every name derives from the two contract names, so the worker's retry and dead-letter plumbing
can be found by prefix (`email_consumer.user_registered.`). Both services declare the same
topology with the same arguments: RabbitMQ refuses a redeclaration whose arguments differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from pika.exchange_type import ExchangeType

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel

EXCHANGE: Final = "user.events"
ROUTING_KEY: Final = "user.registered"
QUEUE: Final = "email_consumer.user_registered"
DEAD_LETTER_QUEUE: Final = f"{QUEUE}.dlq"
DEAD_LETTER_EXCHANGE: Final = f"{QUEUE}.dlx"
RETRY_EXCHANGE: Final = f"{QUEUE}.retry"
# Deliveries of one message (crashes, requeues) before the broker dead-letters it itself, so an
# event that kills the worker every time cannot loop forever.
DELIVERY_LIMIT: Final = 10
DEFAULT_RETRY_DELAYS_S: Final = (5, 30, 300)


def retry_queue_name(delay_s: int) -> str:
    """The TTL queue that holds an event for `delay_s` seconds before it returns to the queue."""
    return f"{QUEUE}.retry.{delay_s}s"


# Quorum queues dead-letter at most once unless told otherwise; at-least-once keeps a message
# until the dead-letter target confirmed it (it requires the reject-publish overflow mode).
_AT_LEAST_ONCE_DEAD_LETTERING: Final = {
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def main_queue_arguments() -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        **_AT_LEAST_ONCE_DEAD_LETTERING,
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
    }


def retry_queue_arguments(delay_s: int) -> dict[str, Any]:
    # When the TTL expires the broker dead-letters the message through the default exchange
    # straight back into the main queue: delayed redelivery without any broker plugin.
    return {
        "x-queue-type": "quorum",
        **_AT_LEAST_ONCE_DEAD_LETTERING,
        "x-message-ttl": delay_s * 1000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": QUEUE,
    }


def declare_topology(
    channel: BlockingChannel, *, retry_delays_s: Sequence[int] = DEFAULT_RETRY_DELAYS_S
) -> None:
    """Declare exchanges, queues and bindings; a no-op when they already exist alike."""
    channel.exchange_declare(EXCHANGE, exchange_type=ExchangeType.topic, durable=True)
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, exchange_type=ExchangeType.direct, durable=True)
    channel.queue_declare(DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(DEAD_LETTER_QUEUE, DEAD_LETTER_EXCHANGE, routing_key=DEAD_LETTER_QUEUE)
    channel.queue_declare(QUEUE, durable=True, arguments=main_queue_arguments())
    channel.queue_bind(QUEUE, EXCHANGE, routing_key=ROUTING_KEY)
    if retry_delays_s:
        channel.exchange_declare(RETRY_EXCHANGE, exchange_type=ExchangeType.direct, durable=True)
    for delay_s in retry_delays_s:
        name = retry_queue_name(delay_s)
        channel.queue_declare(name, durable=True, arguments=retry_queue_arguments(delay_s))
        channel.queue_bind(name, RETRY_EXCHANGE, routing_key=name)
