"""The welcome job of the asyncio peer: the same email, sent with aiosmtplib.

The threaded peers keep one SMTP connection per thread; the asyncio equivalent is one per
handler running at once. So connections are kept in a pool that opens a new one only when every
open connection is busy: it ends up as large as the framework's concurrency, whatever bounds
that (FastStream's prefetch, or nothing at its defaults), and never limits it itself.
"""

from __future__ import annotations

from typing import Any

import aiosmtplib

from bench.welcome_job import WelcomeRenderer


class AsyncWelcomeSender:
    """Renders and sends welcome emails from coroutines of one event loop."""

    def __init__(self, smtp_host: str, smtp_port: int, timeout_s: float = 10.0) -> None:
        self._host = smtp_host
        self._port = smtp_port
        self._timeout_s = timeout_s
        self._renderer = WelcomeRenderer()
        self._idle: list[aiosmtplib.SMTP] = []

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def send(self, event: dict[str, Any]) -> None:
        message = self._renderer.render(event)
        smtp = self._idle.pop() if self._idle else await self._connect()
        try:
            await smtp.send_message(message)
        except aiosmtplib.SMTPServerDisconnected:
            # The reused connection went stale: one fresh connection, as the worker does.
            smtp = await self._connect()
            await smtp.send_message(message)
        # Back to the pool only after a success: a connection that failed otherwise is dropped.
        self._idle.append(smtp)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for smtp in idle:
            if smtp.is_connected:
                await smtp.quit()

    async def _connect(self) -> aiosmtplib.SMTP:
        # The sink is plain SMTP on loopback, as for the threaded peers' smtplib.
        smtp = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            timeout=self._timeout_s,
            use_tls=False,
            start_tls=False,
        )
        await smtp.connect()
        return smtp
