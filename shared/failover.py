"""Which node of a cluster a new connection tries first.

AMQP_URL may list several nodes of one cluster. Each process shuffles the list once, so that
many services started together spread over the nodes instead of all piling onto the first one
written. A new connection then tries the nodes in that order, starting with the one after the
node the previous connection reached: a connection is mostly opened again because the last one
was lost, and the node it was on is then the likeliest to be down, or stopped without a word
(a SIGSTOPped node accepts TCP and answers nothing until a timeout).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence


class NodeRotation:
    """The shuffled node list of one AMQP_URL and the node last reached; thread-safe."""

    def __init__(self, urls: Sequence[str], *, shuffle: random.Random | None = None) -> None:
        if not urls:
            raise ValueError("a rotation needs at least one URL")
        self._order = list(urls)
        (shuffle or random.SystemRandom()).shuffle(self._order)
        self._reached: int | None = None
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self._order)

    def to_try(self) -> list[str]:
        """Every URL once, in the order a new connection should try them."""
        with self._lock:
            start = 0 if self._reached is None else (self._reached + 1) % len(self._order)
        return self._order[start:] + self._order[:start]

    def reached(self, url: str) -> None:
        """Record that a connection to `url` opened."""
        with self._lock:
            self._reached = self._order.index(url)

    def current(self) -> str:
        """The node the last connection reached (the first to try before any did).

        For a connection opened right after another one (the publisher's, after the topology
        check's), so that it goes where the broker answered a moment ago.
        """
        with self._lock:
            return self._order[0 if self._reached is None else self._reached]


_rotations: dict[tuple[str, ...], NodeRotation] = {}
_rotations_lock = threading.Lock()


def rotation_for(urls: Sequence[str]) -> NodeRotation:
    """The process's one rotation for this list of URLs."""
    key = tuple(urls)
    with _rotations_lock:
        rotation = _rotations.get(key)
        if rotation is None:
            rotation = _rotations[key] = NodeRotation(key)
        return rotation
