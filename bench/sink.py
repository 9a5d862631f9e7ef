"""The SMTP sink every delivery benchmark sends to: aiosmtpd in a process of its own.

It accepts every message, optionally after a fixed delay (a remote mail server takes tens of
milliseconds), and records when it accepted each one and the `X-Event-ID` it carried. It runs
in a separate process so that its own CPU time is not charged to, nor stolen from, the
benchmark harness; the harness reads a shared counter while it waits and fetches the records
at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import re
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any, Protocol

from shared.runtime import freeze_start_up_objects
from tests.support.ports import free_port

_EVENT_ID_HEADER = re.compile(rb"^X-Event-ID:[ \t]*([^\r\n]+)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Accepted:
    """One accepted message: its event id (empty when it had none) and `time.time()`."""

    event_id: str
    accepted_at: float


class MailServer(Protocol):
    """Where a measured service sends its email: the sink, or a proxy in front of it."""

    def environment(self) -> dict[str, str]:
        """SMTP_HOST and SMTP_PORT for the service."""
        ...


class _Recorder:
    """The aiosmtpd handler: wait the configured latency, then record and accept."""

    def __init__(self, counter: Synchronized[int], latency_s: float) -> None:
        self.counter = counter
        self.latency_s = latency_s
        # Offered as real mail servers offer it (aiosmtpd reads pipelined commands in order but
        # does not say so); clients that do not pipeline (smtplib's `sendmail`, aiosmtplib)
        # are not affected.
        self.pipelining = True
        self.records: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    async def handle_EHLO(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")  # before the last line, "250 HELP"
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        content = envelope.original_content or envelope.content or b""
        # Only the header is needed: a regular expression costs far less than parsing the
        # message, so the sink stays cheap next to what it measures.
        found = _EVENT_ID_HEADER.search(content[:8192])
        event_id = found.group(1).decode("ascii", "replace").strip() if found else ""
        with self.lock:
            self.records.append((event_id, time.time()))
        with self.counter.get_lock():
            self.counter.value += 1
        return "250 2.0.0 OK"


def _serve(port: int, latency_s: float, counter: Synchronized[int], commands: Connection) -> None:
    from aiosmtpd.controller import Controller

    recorder = _Recorder(counter, latency_s)
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        # A fixed name: otherwise every new SMTP session looks up the host's FQDN.
        server_hostname="bench-sink",
        enable_SMTPUTF8=True,
        ready_timeout=10,
    )
    controller.start()
    # Accept times are what the latency section measures: a full collection walking every
    # start-up object would stall them, whichever publisher is being measured.
    freeze_start_up_objects()
    commands.send("ready")
    try:
        while True:
            command, argument = commands.recv()
            if command == "stop":
                break
            if command == "latency":
                recorder.latency_s = float(argument)
                commands.send("ok")
            elif command == "pipelining":
                recorder.pipelining = bool(argument)
                commands.send("ok")
            elif command == "take":
                with recorder.lock:
                    records, recorder.records = recorder.records, []
                with counter.get_lock():
                    counter.value = 0
                commands.send(records)
    finally:
        controller.stop()


class SmtpSink:
    """Start with `with SmtpSink() as sink:`; `count`, `wait_for`, `take`, `set_latency`,
    `offer_pipelining`."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self._latency_s = latency_s
        context = multiprocessing.get_context("spawn")
        self._counter: Synchronized[int] = context.Value("q", 0)
        self._commands, child_end = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(self.port, latency_s, self._counter, child_end),
            name="bench-smtp-sink",
            daemon=True,
        )

    def __enter__(self) -> SmtpSink:
        self._process.start()
        if not self._commands.poll(30) or self._commands.recv() != "ready":
            raise RuntimeError("the SMTP sink did not start within 30 s")
        return self

    def __exit__(self, *_exc: object) -> None:
        with contextlib.suppress(OSError):  # the sink died already: nothing to stop
            self._commands.send(("stop", None))
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    @property
    def pid(self) -> int:
        return int(self._process.pid or 0)

    @property
    def count(self) -> int:
        """Messages accepted since the last `take`."""
        return int(self._counter.value)

    def environment(self) -> dict[str, str]:
        return {"SMTP_HOST": self.host, "SMTP_PORT": str(self.port)}

    def set_latency(self, seconds: float) -> None:
        self._commands.send(("latency", seconds))
        self._commands.recv()

    def offer_pipelining(self, offered: bool) -> None:
        """Whether EHLO offers PIPELINING to sessions opened from now on (on at the start)."""
        self._commands.send(("pipelining", offered))
        self._commands.recv()

    def take(self) -> list[Accepted]:
        """The records since the last `take`, and a fresh start for the counter."""
        self._commands.send(("take", None))
        records: list[tuple[str, float]] = self._commands.recv()
        return [Accepted(event_id, accepted_at) for event_id, accepted_at in records]

    def wait_for(self, count: int, timeout_s: float, *, alive: Any = None) -> float:
        """Wait until `count` messages arrived; returns `time.monotonic()` when seen.

        `alive`, when given, is called while waiting and may raise to end the wait early (a
        worker process that died will never deliver the rest).
        """
        deadline = time.monotonic() + timeout_s
        while self.count < count:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(
                    f"{self.count} of {count} emails arrived within {timeout_s:.0f} s"
                )
            if alive is not None:
                alive()
            time.sleep(0.005 if count - self.count < 50 else 0.02)
        return time.monotonic()
