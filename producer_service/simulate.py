"""Synthetic registrations for demos and load tests, through the real registration use case."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from producer_service.registration import RegisterUser

# How long the simulation keeps waiting for the relay once the published count stops growing.
DEFAULT_SETTLE_S: Final = 10.0
_POLL_S: Final = 0.2
# While registering, how often a live display asks how many events are published (one query).
_LIVE_POLL_S: Final = 0.5


class SimulationProgress(Protocol):
    live: bool
    """True for a display someone watches: the published count is then polled as it grows."""

    def registered(self, done: int) -> None: ...

    def published(self, done: int) -> None: ...


class NoProgress:
    live = False

    def registered(self, done: int) -> None:
        pass

    def published(self, done: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class SimulationSummary:
    requested: int
    registered: int
    published: int
    register_s: float
    publish_s: float
    """From the first registration to the last publication seen."""

    @property
    def register_rate(self) -> float:
        return self.registered / self.register_s if self.register_s > 0 else 0.0

    @property
    def publish_rate(self) -> float:
        return self.published / self.publish_s if self.publish_s > 0 else 0.0


class Simulation:
    """Registers `count` synthetic users, then waits until their events are published."""

    def __init__(
        self,
        register: RegisterUser,
        count_published: Callable[[Sequence[str]], int],
        *,
        stop: threading.Event | None = None,
        settle_s: float = DEFAULT_SETTLE_S,
        clock: Callable[[], float] = time.monotonic,
        commits: threading.Event | None = None,
    ) -> None:
        self._register = register
        # Set after each registration: it wakes a relay that publishes at once (`OutboxRelay`).
        self._commits = commits
        self._count_published = count_published
        self._stop = stop or threading.Event()
        self._settle_s = settle_s
        self._clock = clock

    def run(
        self, count: int, *, rate: float | None = None, progress: SimulationProgress | None = None
    ) -> SimulationSummary:
        progress = progress or NoProgress()
        run_id = uuid.uuid4().hex[:8]
        event_ids: list[str] = []
        started = self._clock()
        next_poll = started + _LIVE_POLL_S
        for number in range(count):
            if self._stop.is_set():
                break
            if rate:
                self._stop.wait(max(0.0, started + number / rate - self._clock()))
            # Unique per run, so repeated simulations against one database never conflict.
            username = f"sim{run_id}_{number}"
            registration = self._register(
                username, f"{username}@example.com", f"Simulated User {number}"
            )
            event_ids.append(registration.event_id)
            if self._commits is not None:
                self._commits.set()
            progress.registered(len(event_ids))
            if progress.live and self._clock() >= next_poll:
                # Events are published at commit, while the rest are still registering.
                progress.published(self._count_published(event_ids))
                next_poll = self._clock() + _LIVE_POLL_S
        register_s = self._clock() - started
        published, last_progress = self._await_publication(event_ids, progress)
        return SimulationSummary(
            requested=count,
            registered=len(event_ids),
            published=published,
            register_s=register_s,
            publish_s=last_progress - started,
        )

    def _await_publication(
        self, event_ids: Sequence[str], progress: SimulationProgress
    ) -> tuple[int, float]:
        published = 0
        last_progress = self._clock()
        while not self._stop.is_set():
            now_published = self._count_published(event_ids)
            now = self._clock()
            if now_published > published:
                published, last_progress = now_published, now
                progress.published(published)
            if published >= len(event_ids) or now - last_progress >= self._settle_s:
                break
            self._stop.wait(_POLL_S)
        return published, last_progress
