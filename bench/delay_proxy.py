"""A TCP proxy in front of the SMTP sink that delays every chunk each way: a mail server that is
a network round trip away, as a relay in another zone or a provider's SMTP endpoint is.

The sink on 127.0.0.1 answers within microseconds, so a client's round trips cost nothing there
and a client that waits for each reply looks as fast as one that pipelines. Here each chunk is
held for half the round trip in either direction, in order, without limiting the bandwidth.
It runs on an event loop in a thread of the harness, whose CPU is not measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from tests.support.ports import free_port

_CHUNK = 65536


class DelayProxy:
    """`with DelayProxy(target_port, rtt_s) as proxy:`, clients pointed at `proxy.environment()`."""

    def __init__(self, target_port: int, rtt_s: float) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.rtt_s = rtt_s
        self._target_port = target_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-delay-proxy")
        self._server: asyncio.Server | None = None

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=10)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def environment(self) -> dict[str, str]:
        return {"SMTP_HOST": self.host, "SMTP_PORT": str(self.port)}

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._relay, self.host, self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        try:
            server_in, server_out = await asyncio.open_connection(self.host, self._target_port)
        except OSError:
            client_out.close()
            return
        one_way_s = self.rtt_s / 2
        await asyncio.gather(
            _delayed_copy(client_in, server_out, one_way_s),
            _delayed_copy(server_in, client_out, one_way_s),
            return_exceptions=True,  # a reset on either side ends both copies
        )


async def _delayed_copy(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay_s: float
) -> None:
    """Copy `source` to `sink`, each chunk written `delay_s` after it was read, in order."""
    due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def write_when_due() -> None:
        while True:
            at, data = await due.get()
            if not data:
                break
            wait_s = at - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            sink.write(data)
            await sink.drain()
        with contextlib.suppress(OSError):
            sink.close()

    writer = asyncio.create_task(write_when_due())
    try:
        while data := await source.read(_CHUNK):
            due.put_nowait((time.monotonic() + delay_s, data))
    finally:
        due.put_nowait((0.0, b""))  # end of stream: close the other side once written
        await writer
