"""Beam's state cache weighs cached values as Beam does, listing the module
globals it leaves out only when modules were added or removed."""

import json
import sys
import types

from apache_beam.runners.worker import statecache
import numpy as np
import objsize

from pipeline import beam_state_cache

beam_state_cache.install()


def _beams_weight(*objs):
  """What Beam's own get_deep_size gives: objsize with its settings, the
  module globals listed afresh."""
  return objsize.get_deep_size(
      *objs,
      get_size_func=statecache._size_func,
      get_referents_func=statecache._get_referents_func,
      filter_func=statecache._filter_func)


class _Holder:

  def __init__(self, *held):
    self.held = held


_VALUES = [
    None,
    b'x' * 1000,
    [np.arange(1000), np.zeros((10, 10))],
    {
        'counts': {
            'a': 1,
            'b': 2
        },
        'rows': [(1, 'x'), (2, 'y')]
    },
    # Module globals are left out of a weight; functions and types are not
    # measured at all.
    _Holder(vars(json), json.dumps, dict),
    [vars(np), vars(sys)],
]


def test_installed_and_idempotent():
  installed = statecache.get_deep_size
  assert hasattr(installed, 'beam_get_deep_size')
  beam_state_cache.install()
  assert statecache.get_deep_size is installed


def test_same_weights_as_beam():
  for value in _VALUES:
    assert statecache.get_deep_size(value) == _beams_weight(value), value
  assert statecache.get_deep_size(*_VALUES) == _beams_weight(*_VALUES)


def test_a_module_loaded_later_is_left_out_too():
  module = types.ModuleType('_loaded_later_for_the_test')
  module.table = list(range(10000))
  statecache.get_deep_size([1])  # the list as it was before the import
  sys.modules[module.__name__] = module
  try:
    value = _Holder(vars(module))
    assert statecache.get_deep_size(value) == _beams_weight(value)
    # Without leaving its globals out, the table would be weighed in.
    assert _beams_weight(value) < sys.getsizeof(module.table)
  finally:
    del sys.modules[module.__name__]


def test_module_globals_listed_once_while_modules_are_unchanged(monkeypatch):
  listed = []
  real_vars = vars

  def counting_vars(obj=None):
    if isinstance(obj, types.ModuleType):
      listed.append(obj)
    return real_vars(obj)

  statecache.get_deep_size([1])
  monkeypatch.setattr(beam_state_cache, 'vars', counting_vars, raising=False)
  for _ in range(5):
    statecache.get_deep_size({'a': [1, 2, 3]})
  assert listed == []  # nothing imported since: the list is reused
  sys.modules['_another_module_for_the_test'] = types.ModuleType('_another')
  try:
    statecache.get_deep_size({'a': [1, 2, 3]})
    modules = [
        m for m in sys.modules.values() if isinstance(m, types.ModuleType)
    ]
    assert len(listed) == len(modules)  # listed again, each module once
    statecache.get_deep_size({'a': [1, 2, 3]})
    assert len(listed) == len(modules)  # and reused
  finally:
    del sys.modules['_another_module_for_the_test']
