"""A batch of basic.publish handed to pika's connection as one buffer, not three per message.

`Channel.basic_publish` marshals a method, a header and a body frame and gives each to the
transport on its own; the transport then makes one `send()` per frame. For a batch of 500 small
events that is 1,500 system calls and as many trips through pika's buffering, which the relay's
profile showed as a third of its time (docs/PERFORMANCE.md, thirteenth session). Here the frames
are built with pika's own classes (`pika.frame`, `pika.spec`), so the bytes are exactly what
`basic_publish` would write, joined, and passed to the connection once: one `send()` per batch
on a socket that takes it.

The join goes through `Connection._output_marshaled_frames`, which is how pika itself writes
frames (it keeps the byte counts the heartbeat checker reads). It is not public API:
`batch_writer` returns None on a pika without it, and the publisher then publishes one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import pika.exceptions
import pika.frame
import pika.spec

# (routing key, body, properties) of one publish.
Publish = tuple[str, bytes, pika.spec.BasicProperties]
BatchWriter = Callable[[Sequence[Publish]], None]

_WRITE_FRAMES: Final = "_output_marshaled_frames"
_BODY_MAX: Final = "_body_max_length"


def batch_writer(channel: Any, exchange: str) -> BatchWriter | None:
    """A function that publishes (mandatory) to `exchange` on `channel`, a batch in one write;
    None when this pika's connection does not write frames the way this module expects."""
    connection = channel.connection
    if not callable(getattr(connection, _WRITE_FRAMES, None)):
        return None
    if not isinstance(getattr(connection, _BODY_MAX, None), int):
        return None
    number = int(channel.channel_number)
    method_frames: dict[str, bytes] = {}

    def method_frame(routing_key: str) -> bytes:
        # Identical for every event with this routing key: marshalled once per channel.
        found = method_frames.get(routing_key)
        if found is None:
            publish = pika.spec.Basic.Publish(
                exchange=exchange, routing_key=routing_key, mandatory=True
            )
            found = method_frames[routing_key] = pika.frame.Method(number, publish).marshal()
        return found

    def write(publishes: Sequence[Publish]) -> None:
        if not channel.is_open:
            raise pika.exceptions.ChannelWrongStateError("channel is closed")
        if connection.is_closed:
            raise pika.exceptions.ConnectionWrongStateError("connection is closed")
        body_max = int(getattr(connection, _BODY_MAX))
        pieces: list[bytes] = []
        for routing_key, body, properties in publishes:
            pieces.append(method_frame(routing_key))
            pieces.append(pika.frame.Header(number, len(body), properties).marshal())
            # As pika does: no body frame for an empty body, several for one over frame_max.
            for start in range(0, len(body), body_max):
                pieces.append(pika.frame.Body(number, body[start : start + body_max]).marshal())
        if pieces:
            getattr(connection, _WRITE_FRAMES)([b"".join(pieces)])

    return write
