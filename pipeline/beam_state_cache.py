"""Beam's state cache weighs what it caches without listing every module each time.

The SDK worker (Apache Beam 2.61; the DirectRunner's in-process one too)
caches side inputs in a `StateCache`, which weighs each value it loads with
objsize. Before each weighing objsize collects the ids of every loaded
module's globals, to leave them out of the size: about 4,500 modules in the
preprocess command, 4.8 ms per weighing. The Adult preprocess weighs 157
values, and 0.75 s of its 0.80 s of weighing is that list.

`install()` wraps `statecache.get_deep_size` to weigh with the same objsize
settings and the same exclusions, the list of module globals collected again
only when the number of loaded modules has changed. A module replaced in
`sys.modules` without the count changing would be weighed in if a cached
value referred to its globals: only the cache's estimate of its size would
change, never a value.
"""

import sys
from typing import Any, Callable, FrozenSet, Tuple

# (len(sys.modules) when collected, ids of the modules' globals)
_module_globals: Tuple[int, FrozenSet[int]] = (-1, frozenset())


def _module_globals_ids() -> FrozenSet[int]:
  """What objsize excludes as "modules' globals" (its _iter_modules_globals),
  collected again when modules were added or removed."""
  global _module_globals
  count, ids = _module_globals
  if count != len(sys.modules):
    collected = set()
    for module in list(sys.modules.values()):
      try:
        collected.add(id(vars(module)))
      except TypeError:
        pass
    _module_globals = count, ids = len(sys.modules), frozenset(collected)
  return ids


def _weighing(get_deep_size: Callable[..., int]) -> Callable[..., int]:
  """Beam's get_deep_size (its objsize settings, read from the statecache
  module) with the module globals' ids remembered."""
  # Imported here: importing the package must not import Beam.
  from apache_beam.runners.worker import statecache  # pylint: disable=g-import-not-at-top
  import objsize  # pylint: disable=g-import-not-at-top

  settings = objsize.traverse.ObjSizeSettings(
      get_size_func=statecache._size_func,  # pylint: disable=protected-access
      get_referents_func=statecache._get_referents_func,  # pylint: disable=protected-access
      filter_func=statecache._filter_func,  # pylint: disable=protected-access
      exclude_modules_globals=False)

  def remembered_get_deep_size(*objs: Any) -> int:
    context = objsize.traverse.TraversalContext(settings)
    context.exclude_set.update(_module_globals_ids())
    return context.get_deep_size(*objs)

  remembered_get_deep_size.beam_get_deep_size = get_deep_size  # type: ignore[attr-defined]
  return remembered_get_deep_size


def install() -> None:
  """Idempotent; a Beam or objsize without what it wraps is left as it is."""
  try:
    from apache_beam.runners.worker import statecache  # pylint: disable=g-import-not-at-top
    import objsize  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  current = getattr(statecache, 'get_deep_size', None)
  needed = ('_size_func', '_get_referents_func', '_filter_func')
  if (current is None or hasattr(current, 'beam_get_deep_size') or
      not all(hasattr(statecache, name) for name in needed) or
      not hasattr(objsize, 'traverse') or
      not hasattr(objsize.traverse, 'TraversalContext')):
    return
  statecache.get_deep_size = _weighing(current)
