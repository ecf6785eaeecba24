"""What a command holds for good is frozen; garbage is freed, never frozen."""

import gc
import weakref

import pytest

from core import heap


class _Node:

  def __init__(self):
    self.other = self


@pytest.fixture(autouse=True)
def _unfrozen():
  gc.unfreeze()
  yield
  gc.unfreeze()


def test_freeze_imports_leaves_what_is_alive_out_of_collections():
  kept = _Node()
  heap.freeze_imports()
  assert gc.get_freeze_count() > 1000
  assert not any(o is kept for o in gc.get_objects())
  # Later garbage is still collected.
  later = weakref.ref(_Node())
  gc.collect()
  assert later() is None


def test_settle_frees_garbage_cycles_and_freezes_the_rest():
  kept = _Node()
  heap.freeze_imports()
  cycle = _Node()
  gone = weakref.ref(cycle)
  del cycle  # unreachable, but a cycle: only a collection frees it
  assert gone() is not None
  heap.settle()
  assert gone() is None
  assert gc.get_freeze_count() > 1000
  assert not any(o is kept for o in gc.get_objects())
  # A cycle frozen and then let go is freed by the next settle.
  frozen = weakref.ref(kept)
  del kept
  gc.collect()
  assert frozen() is not None
  heap.settle()
  assert frozen() is None
