"""The model store in-process: the loaded model is kept out of the cyclic
garbage collector's full passes, and swapped-out versions are still freed."""

import gc
import os
import shutil

from core.layout import ModelDir
from serving.model_store import ModelStore


def _objects():
  return gc.get_freeze_count() + len(gc.get_objects())


def test_heap_frozen_after_load_and_replaced_versions_freed(model_copy):
  model_dir, version = model_copy
  base = os.path.join(model_dir, ModelDir.EXPORT_DIR)
  store = ModelStore(base, poll_seconds=0)
  served = version
  try:
    store.load_initial()
    # TensorFlow's long-lived objects are out of the collector's full
    # passes (hundreds of thousands for any SavedModel).
    assert gc.get_freeze_count() > 50_000
    counts = []
    for _ in range(3):
      newer = served + 1
      shutil.copytree(
          os.path.join(base, str(served)), os.path.join(base, str(newer)))
      shutil.rmtree(os.path.join(base, str(served)))
      assert store.poll_once() is None  # new files: looked at twice first
      swapped = store.poll_once()
      assert swapped is not None and swapped.version == newer
      served = newer
      del swapped
      counts.append(_objects())
      assert gc.get_freeze_count() > 50_000
    # Each swap frees the version it replaced, frozen cycles included: the
    # heap does not grow by a model per swap (tens of thousands of objects).
    assert counts[2] - counts[1] < 2_000, counts
  finally:
    if served != version:
      os.rename(
          os.path.join(base, str(served)), os.path.join(base, str(version)))
    gc.unfreeze()
