"""Test ports come from below the kernel's ephemeral range, so a restarted server finds its port
free (no outgoing connection can have taken it meanwhile)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.ports import free_port


def test_free_ports_are_below_the_ephemeral_range_and_bindable() -> None:
    ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])

    ports = {free_port() for _ in range(20)}

    assert all(10_000 <= port < ephemeral_start for port in ports), ports
    assert len(ports) > 1  # chosen at random, so parallel tests rarely collide
    for port in ports:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))
