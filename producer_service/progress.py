"""A rich progress bar for `simulate` when a person is watching, nothing otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from producer_service.simulate import NoProgress, SimulationProgress


class _RichProgress:
    def __init__(self, progress: Progress, total: int) -> None:
        self._progress = progress
        self._registered = progress.add_task("registered", total=total)
        self._published = progress.add_task("published", total=total)

    def registered(self, done: int) -> None:
        self._progress.update(self._registered, completed=done)

    def published(self, done: int) -> None:
        self._progress.update(self._published, completed=done)


@contextmanager
def terminal_progress(total: int) -> Iterator[SimulationProgress]:
    """Bars on stderr when it is a terminal; in pipes and logs, no bar (the summary remains)."""
    if not sys.stderr.isatty():
        yield NoProgress()
        return
    columns = (
        TextColumn("{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        yield _RichProgress(progress, total)
