"""What both services do to their app once start-up is done."""

import gc
import weakref
from collections.abc import Iterator

import pytest

from shared.stack import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test run collects as usual


def test_start_up_objects_are_frozen_and_garbage_is_freed_first(unfrozen: None) -> None:
    kept = _Node()
    assert any(o is kept for o in gc.get_objects())  # scanned by every full collection
    garbage = _Node()
    dead = weakref.ref(garbage)
    del garbage
    freeze_startup_heap()
    assert dead() is None  # collected before the freeze: frozen, it would never be freed
    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())  # frozen: no collection scans it again
