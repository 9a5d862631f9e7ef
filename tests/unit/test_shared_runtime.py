"""Freezing start-up objects: garbage first, then the living ones out of the collector's way."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from shared.runtime import freeze_start_up_objects


class _Node:
    def __init__(self) -> None:
        self.partner: _Node | None = None


@pytest.fixture
def unfrozen_afterwards() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen_afterwards")
def test_garbage_from_start_up_is_collected_and_the_living_objects_are_frozen() -> None:
    first, second = _Node(), _Node()
    first.partner, second.partner = second, first
    unreachable_cycle = weakref.ref(first)
    del first, second
    kept = _Node()

    freeze_start_up_objects()

    assert unreachable_cycle() is None  # collected, not frozen for good
    assert gc.get_freeze_count() > 0
    assert not any(tracked is kept for tracked in gc.get_objects())  # out of every generation
