"""Rich progress bars for `simulate` when a person is watching, nothing otherwise.

Both bars are live: `registered` counts as users are stored, `published` as their events are
confirmed (the simulation polls for it). While the bars show, log lines are printed above them:
rich replaces `sys.stderr` with a writer that goes through its console, and the logging
handler writes to the current `sys.stderr` (shared/logging.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from producer_service.simulate import NoProgress, SimulationProgress


class _RichProgress:
    live = True

    def __init__(self, progress: Progress, total: int) -> None:
        self._progress = progress
        self._registered = progress.add_task("registered", total=total)
        self._published = progress.add_task("published", total=total)

    def registered(self, done: int) -> None:
        self._progress.update(self._registered, completed=done)

    def published(self, done: int) -> None:
        self._progress.update(self._published, completed=done)


@contextmanager
def terminal_progress(total: int, console: Console | None = None) -> Iterator[SimulationProgress]:
    """Bars on stderr when it is a terminal (or on `console`); in pipes and logs, no bar."""
    if console is None:
        if not sys.stderr.isatty():
            yield NoProgress()
            return
        console = Console(stderr=True)
    columns = (
        TextColumn("{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, redirect_stderr=True, redirect_stdout=False) as bars:
        yield _RichProgress(bars, total)
