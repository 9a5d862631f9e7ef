"""Fuzz the AMQP header table against the worker and the DLQ tools, on the real broker.

hypothesis writes tables byte by byte (tests/support/amqp_wire.py) over every field type
RabbitMQ accepts, with extreme values (NaN and infinite doubles, timestamps up to 2**64 - 1,
decimals of scale 255, strings that are not UTF-8, the worker's own header names) and nesting.
Whatever the table holds: the events around it are emailed once, a message that must be
dead-lettered is, with a reason, and the DLQ tools list, replay and purge it.
Example counts are modest: each worker example is a few round trips through the broker.
"""

from __future__ import annotations

from pathlib import Path

import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from email_consumer import wire_properties
from email_consumer.dead_letters import DeadLetterQueue
from shared import topology
from shared.events import serialise
from shared.settings import Environment, broker_settings
from tests.support.amqp_wire import Field, encode_table, publish_raw
from tests.support.smtp import SmtpTestServer
from tests.support.waiting import wait_until
from tests.support.worker import (
    TEST_RETRY_DELAYS,
    dead_letters,
    new_event,
    peek,
    publish_event,
    running_worker,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

# The test process reads the queues too.
wire_properties.install()

_INT_RANGES = {
    "t": (0, 255),
    "b": (-(2**7), 2**7 - 1),
    "B": (0, 2**8 - 1),
    "s": (-(2**15), 2**15 - 1),
    "u": (0, 2**16 - 1),
    "I": (-(2**31), 2**31 - 1),
    "i": (0, 2**32 - 1),
    "l": (-(2**63), 2**63 - 1),
    "T": (0, 2**64 - 1),
}
_EXTREME_TIMESTAMPS = [0, 253402300799, 253402300800, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1]


def _integers(kind: str) -> st.SearchStrategy[Field]:
    low, high = _INT_RANGES[kind]
    values = st.one_of(st.sampled_from([low, high, 0 if low <= 0 else low]), st.integers(low, high))
    if kind == "T":
        values = st.one_of(st.sampled_from(_EXTREME_TIMESTAMPS), values)
    return values.map(lambda value: Field(kind, value))


_scalars = st.one_of(
    *(_integers(kind) for kind in _INT_RANGES),
    # Finite only: RabbitMQ itself refuses a NaN or infinite float or double (its table parser
    # fails, the publisher's connection is closed with INTERNAL_ERROR), so none reaches a queue.
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(lambda v: Field("f", v)),
    st.one_of(
        st.sampled_from([1e300, -1.7e308, 5e-324, 2.0**63, -(2.0**64)]),
        st.floats(allow_nan=False, allow_infinity=False),
    ).map(lambda value: Field("d", value)),
    st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1)).map(lambda sr: Field("D", sr)),
    st.one_of(st.text(max_size=20).map(str.encode), st.binary(max_size=20)).map(
        lambda data: Field("S", data)
    ),
    st.binary(max_size=20).map(lambda data: Field("x", data)),
    st.just(Field("V")),
)
# The worker's and the broker's own names, where a crafted value would do the most harm.
_keys = st.one_of(
    st.sampled_from(
        [
            "schema_version",
            "retry-count",
            "attempts",
            "replay-count",
            "dead-letter-reason",
            "error-message",
            "first-failure-at",
            "original-routing-key",
            "x-death",
            "x-delivery-count",
        ]
    ),
    st.text(min_size=1, max_size=12).filter(lambda key: len(key.encode()) <= 255),
    st.binary(min_size=1, max_size=12),
)
_fields = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: Field("A", items)),
        st.dictionaries(_keys, inner, max_size=4).map(
            lambda table: Field("F", list(table.items()))
        ),
    ),
    max_leaves=12,
)
tables = st.dictionaries(_keys, _fields, min_size=1, max_size=6).map(
    lambda table: encode_table(list(table.items()))
)


def _sent_ids(smtp_server: SmtpTestServer) -> list[str]:
    return [str(email.message["X-Event-ID"]) for email in smtp_server.messages]


def _dead(amqp_url: str) -> dict[str, dict[str, object]]:
    return {str(m.properties.message_id): m.headers for m in dead_letters(amqp_url)}


def test_no_header_table_stalls_the_worker_or_takes_a_good_event_with_it(
    amqp_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    examples = 0
    with running_worker(amqp_url, smtp_server.environment(), tmp_path) as worker:

        @settings(
            max_examples=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(table=tables)
        def one_table(table: bytes) -> None:
            nonlocal examples
            examples += 1
            fuzzed, sentinel = new_event(f"fuzzed{examples}"), new_event(f"sentinel{examples}")
            malformed_id = f"malformed-{examples}"
            publish_raw(amqp_url, serialise(fuzzed), table, message_id=fuzzed.event_id)
            publish_raw(amqp_url, b"not json", table, message_id=malformed_id)
            publish_event(amqp_url, sentinel)

            def settled() -> bool:
                sent, dead = _sent_ids(smtp_server), _dead(amqp_url)
                fuzzed_done = fuzzed.event_id in sent or fuzzed.event_id in dead
                return sentinel.event_id in sent and malformed_id in dead and fuzzed_done

            wait_until(settled, timeout_s=30, what="the three messages to settle")
            sent, dead = _sent_ids(smtp_server), _dead(amqp_url)
            assert sent.count(sentinel.event_id) == 1
            assert sentinel.event_id not in dead
            if fuzzed.event_id in dead:  # only when no client could read its headers
                assert fuzzed.event_id not in sent
                assert dead[fuzzed.event_id]["error-type"] == "UndecodableHeaders"
            else:
                assert sent.count(fuzzed.event_id) == 1
            assert dead[malformed_id]["dead-letter-reason"] == "malformed"
            for headers in dead.values():
                assert headers["dead-letter-reason"] == "malformed", headers

        one_table()
        log = worker.log()
    assert log.count('"broker connected"') == 1, "the worker lost its connection"
    assert "could not settle" not in log

    with DeadLetterQueue(
        broker_settings(Environment({"AMQP_URL": amqp_url})), TEST_RETRY_DELAYS
    ) as dlq:
        depth = dlq.count()
        assert depth >= examples
        assert len(dlq.list(None)) == depth
        assert dlq.replay(None) == depth
        assert dlq.count() == 0


def test_the_dlq_tools_list_replay_and_purge_whatever_the_header_table(amqp_url: str) -> None:
    broker = broker_settings(Environment({"AMQP_URL": amqp_url}))
    examples = 0
    with DeadLetterQueue(broker, TEST_RETRY_DELAYS) as dlq:

        @settings(
            max_examples=60,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(tables=st.lists(tables, min_size=1, max_size=3))
        def some_tables(tables: list[bytes]) -> None:
            nonlocal examples
            examples += 1
            dlq.purge()
            _purge_main_queue(amqp_url)
            ids = [f"dead-{examples}-{index}" for index in range(len(tables))]
            for message_id, table in zip(ids, tables, strict=True):
                publish_raw(
                    amqp_url,
                    b"{}",
                    table,
                    message_id=message_id,
                    exchange=topology.DEAD_LETTER_EXCHANGE,
                    routing_key=topology.DEAD_LETTER_QUEUE,
                )
            assert [row.event_id for row in dlq.list(None)] == ids
            assert [row.event_id for row in dlq.list(1)] == ids[:1]
            assert dlq.replay(1) == 1
            back = peek(amqp_url, topology.QUEUE)
            assert [m.properties.message_id for m in back] == ids[:1]
            assert wire_properties.undecodable(back[0].properties) is None
            assert back[0].headers["replay-count"] >= 1
            assert dlq.purge() == len(ids) - 1

        some_tables()


def _purge_main_queue(amqp_url: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().queue_purge(topology.QUEUE)
    finally:
        connection.close()
