"""The harness's own logging: only what helps to read a run."""

from __future__ import annotations

import logging


def quiet_pika() -> None:
    """Silence pika's warnings in the harness process.

    `shared.topology.declare_topology` probes passively first, and pika logs the broker's
    expected 404 at WARNING for every fresh vhost: noise between the section headings.
    """
    logging.getLogger("pika").setLevel(logging.ERROR)
