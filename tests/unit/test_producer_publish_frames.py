"""publish_frames writes, in one buffer, exactly the bytes pika's own basic_publish would.

The oracle is pika: its `Connection._send_message` marshals the same publishes frame by frame
into a recording stand-in for the connection's output (the I/O is not what is tested here; the
integration tests send these bytes to RabbitMQ).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pika
import pika.connection
import pika.exceptions
import pika.spec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer_service.publish_frames import Publish, batch_writer

EXCHANGE = "users"
BODY_MAX = 131_072 - 8  # RabbitMQ's default frame_max less the frame's own overhead


class _RecordingConnection:
    """What batch_writer and pika's _send_message use of a connection: the frame output."""

    def __init__(self, body_max: int = BODY_MAX) -> None:
        self._body_max_length = body_max
        self.is_closed = False
        self.writes: list[bytes] = []

    def _output_marshaled_frames(self, frames: Sequence[bytes]) -> None:
        self.writes.extend(frames)


class _Channel:
    def __init__(self, connection: object, number: int = 1) -> None:
        self.connection = connection
        self.channel_number = number
        self.is_open = True


def _as_pika_writes_them(publishes: Sequence[Publish], number: int, body_max: int) -> bytes:
    oracle = _RecordingConnection(body_max)
    for routing_key, body, properties in publishes:
        method = pika.spec.Basic.Publish(exchange=EXCHANGE, routing_key=routing_key, mandatory=True)
        send: Any = pika.connection.Connection._send_message
        send(oracle, number, method, (properties, body))
    return b"".join(oracle.writes)


_properties = st.builds(
    pika.BasicProperties,
    delivery_mode=st.just(2),
    content_type=st.just("application/json"),
    message_id=st.uuids().map(str),
    correlation_id=st.text(max_size=40),
    timestamp=st.integers(min_value=0, max_value=2**40),
    headers=st.dictionaries(
        st.text(max_size=10),
        st.integers(min_value=-(2**31), max_value=2**31 - 1) | st.text(max_size=20),
    ),
)
_publishes = st.lists(
    st.tuples(
        st.sampled_from(["user.registered", "nobody.listens", "x" * 255]),
        st.binary(max_size=300),
        _properties,
    ),
    max_size=20,
)


@given(publishes=_publishes, number=st.integers(min_value=1, max_value=2047))
def test_the_batch_is_the_bytes_pika_writes_joined_in_one_write(
    publishes: list[Publish], number: int
) -> None:
    connection = _RecordingConnection(body_max=64)  # small, so that bodies split into frames
    write = batch_writer(_Channel(connection, number), EXCHANGE)
    assert write is not None

    write(publishes)

    assert connection.writes == ([_as_pika_writes_them(publishes, number, 64)] if publishes else [])


def test_a_body_over_the_frame_size_is_split_as_pika_splits_it() -> None:
    connection = _RecordingConnection()
    body = b"y" * (3 * BODY_MAX + 5)
    publishes: list[Publish] = [("user.registered", body, pika.BasicProperties())]
    write = batch_writer(_Channel(connection), EXCHANGE)
    assert write is not None

    write(publishes)

    (written,) = connection.writes
    assert written == _as_pika_writes_them(publishes, 1, BODY_MAX)


def test_a_closed_channel_or_connection_writes_nothing_and_raises_as_pika_does() -> None:
    connection = _RecordingConnection()
    channel = _Channel(connection)
    write = batch_writer(channel, EXCHANGE)
    assert write is not None
    publishes: list[Publish] = [("user.registered", b"{}", pika.BasicProperties())]

    channel.is_open = False
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        write(publishes)
    channel.is_open, connection.is_closed = True, True
    with pytest.raises(pika.exceptions.ConnectionWrongStateError):
        write(publishes)
    assert connection.writes == []


def test_a_pika_whose_connection_writes_frames_otherwise_gets_no_batch_writer() -> None:
    class _OtherPika:
        is_closed = False

    assert batch_writer(_Channel(_OtherPika()), EXCHANGE) is None


def test_the_real_pika_connection_still_has_what_batch_writes_rely_on() -> None:
    # If a pika release renames these, the publisher falls back to one basic_publish per
    # event: correct, but slower. This test says so before a benchmark has to.
    assert callable(getattr(pika.connection.Connection, "_output_marshaled_frames", None))
    assert "_body_max_length" in pika.connection.Connection.__init__.__code__.co_names
