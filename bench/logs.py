"""The harness's own logging: only what helps to read a run."""

from __future__ import annotations

import logging


def quiet_pika() -> None:
    """Silence pika's own logging in the harness process.

    `shared.topology.declare_topology` probes passively first, and pika logs the broker's
    expected 404 at WARNING for every fresh vhost; while the brokers section starts a node, each
    refused probe comes out as six ERROR lines. Noise between the section headings: a failure
    that matters raises, and the section reports it.
    """
    logging.getLogger("pika").setLevel(logging.CRITICAL)
