"""Fixtures of the fault suite: each test has its own broker, SMTP server and databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Stack
from tests.support.rabbit_node import RabbitNode
from tests.support.smtp import SmtpTestServer


@pytest.fixture
def stack(
    private_rabbit: RabbitNode, smtp_server: SmtpTestServer, tmp_path: Path
) -> Iterator[Stack]:
    """The whole system for one test; every service it started is killed afterwards."""
    system = Stack(node=private_rabbit, smtp=smtp_server, folder=tmp_path)
    try:
        yield system
    finally:
        system.stop_all()
