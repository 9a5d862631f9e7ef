"""`simulate`'s progress on a terminal: both bars live, log lines printed above them."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from producer_service.progress import terminal_progress
from producer_service.simulate import Simulation
from shared.logging import configure_logging, get_logger
from shared.settings import LoggingSettings


@dataclass
class _Registered:
    event_id: str
    message: Any = None


@dataclass
class _RecordingProgress:
    live: bool = True
    calls: list[tuple[str, int]] = field(default_factory=list)

    def registered(self, done: int) -> None:
        self.calls.append(("registered", done))

    def published(self, done: int) -> None:
        self.calls.append(("published", done))


class _Clock:
    """Time moves on by 50 ms each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.05
        return self.now


def test_the_published_count_advances_while_users_are_still_registering() -> None:
    def register(username: str, email: str, full_name: str) -> _Registered:
        return _Registered(event_id=username)

    # Events are published at commit: all but the newest are out whenever someone asks.
    simulation = Simulation(
        register,  # type: ignore[arg-type]
        lambda ids: max(len(ids) - 1, 0),
        clock=_Clock(),
        settle_s=1.0,
    )
    progress = _RecordingProgress()

    simulation.run(40, progress=progress)

    last_registration = max(i for i, (bar, _) in enumerate(progress.calls) if bar == "registered")
    during = [done for bar, done in progress.calls[:last_registration] if bar == "published"]
    assert len(during) >= 3, progress.calls
    assert during == sorted(during)
    assert during[0] > 0
    assert progress.calls[-1] == ("published", 39)


def test_a_display_nobody_watches_is_not_polled_while_registering() -> None:
    asked: list[int] = []

    def count(ids: Any) -> int:
        asked.append(len(ids))
        return len(ids)

    def register(username: str, email: str, full_name: str) -> _Registered:
        return _Registered(event_id=username)

    Simulation(register, count, clock=_Clock()).run(40)  # type: ignore[arg-type]
    assert asked == [40]  # once, after the registrations


def test_log_lines_are_printed_above_the_bars() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, record=True)
    configure_logging(LoggingSettings("INFO", "console"), service="test")

    with terminal_progress(10, console=console) as progress:
        progress.registered(5)
        progress.published(3)
        get_logger("tests.progress").warning("a line above the bars")
        progress.registered(10)
        progress.published(10)

    text = console.export_text()
    assert "a line above the bars" in text
    last_lines = text.strip().splitlines()[-2:]
    assert "registered" in last_lines[0]
    assert "10/10" in last_lines[0]
    assert "published" in last_lines[1]
    assert "10/10" in last_lines[1]
