"""Beam's inspection of DoFn signatures, computed once per function or DoFn.

Apache Beam (2.61) asks `inspect.signature` about every method of a DoFn
each time it checks whether the DoFn keeps state: when a ParDo is built,
twice when the pipeline becomes a proto, when the runner checks the graph
and when a worker sets up a bundle processor. For the preprocess job on
UCI Adult that is about 221,000 calls, 3 s of a 25 s run, nearly all for the
same few dozen methods of Beam's DoFn base classes.

A function's signature depends only on the function, and a bound method's
is its function's without the first parameter, so `install()` wraps the
function Beam calls (`apache_beam.transforms.core.get_signature`) to
remember the answer per function and binding. Anything else (builtins,
functools.partial, callable objects) goes to Beam's own function every time.

Each of those checks asks `userstate.get_dofn_specs` for the DoFn's state
and timer specs, which walks `dir()` of the DoFn and wraps every method it
finds: 6,488 calls for the Adult job's 1,419 DoFn instances, 2.8 s. The
instances Beam asks about are its own (a ParDo keeps a pickled copy of the
DoFn it is given, and each worker unpickles its own), so `install()` also
wraps that function to remember its answer per DoFn instance, by identity
and for as long as the instance lives; each caller gets sets of its own.
Even so Beam was asked 1,013 times (0.56 s) for the Adult job, about 30
classes' new instances. What it finds is the class's methods minus those
the instance's own attributes hide, unless the instance holds a bound
method or the class computes its attributes (a property, `__getattr__`,
`__getattribute__`, `__dir__`; Beam's DoFn's own properties are booleans):
so an instance without those is answered for its class and the names its
attributes hide, asked once. A DoFn that Beam rejects is asked about
again, and rejected again.

The preprocess command installs both; so does importing the `pipeline`
package where Beam is already imported, as in a worker unpickling the job's
DoFns.
"""

import types
from typing import Any, Callable, Dict, FrozenSet, Set, Tuple
import weakref

# function -> {bound: the signature Beam's get_signature gave}
_signatures: 'weakref.WeakKeyDictionary[types.FunctionType, Dict[bool, Any]]'
_signatures = weakref.WeakKeyDictionary()


def _remembering(get_signature: Callable[[Any], Any]) -> Callable[[Any], Any]:

  def remembered_get_signature(func):
    if isinstance(func, types.MethodType) and isinstance(
        func.__func__, types.FunctionType):
      function, bound = func.__func__, True
    elif isinstance(func, types.FunctionType):
      function, bound = func, False
    else:
      return get_signature(func)
    known = _signatures.get(function)
    if known is None:
      known = _signatures.setdefault(function, {})
    if bound not in known:
      known[bound] = get_signature(func)
    return known[bound]

  remembered_get_signature.beam_get_signature = get_signature  # type: ignore[attr-defined]
  return remembered_get_signature


# id(DoFn) -> (a weak reference to that DoFn, its state specs, its timer
# specs); the entry goes when the DoFn does.
_Specs = Tuple[Any, FrozenSet[Any], FrozenSet[Any]]
_dofn_specs: Dict[int, _Specs] = {}


def _forget(key: int) -> Callable[[Any], None]:

  def forget(_):
    _dofn_specs.pop(key, None)

  return forget


_SpecSets = Tuple[FrozenSet[Any], FrozenSet[Any]]
# DoFn class -> whether its attributes are the same for every instance.
_static_classes: 'weakref.WeakKeyDictionary[type, bool]'
_static_classes = weakref.WeakKeyDictionary()
_COMPUTED_ATTRIBUTES = ('__getattr__', '__getattribute__', '__dir__')


def _is_static(cls: type) -> bool:
  """No attribute of `cls` computed per instance, but Beam's DoFn's own."""
  known = _static_classes.get(cls)
  if known is None:
    from apache_beam.transforms.core import DoFn  # pylint: disable=g-import-not-at-top
    known = True
    for klass in cls.__mro__:
      if klass in (object, DoFn):
        continue
      for name, value in vars(klass).items():
        if name in ('__dict__', '__weakref__'):  # the instance's own
          continue
        if name in _COMPUTED_ATTRIBUTES or (
            hasattr(value, '__get__') and
            not isinstance(value,
                           (types.FunctionType, classmethod, staticmethod))):
          known = False
    _static_classes[cls] = known
  return known


def _class_key(dofn: Any) -> Any:
  """The names `dofn`'s attributes hide of its class's, if Beam's answer for
  `dofn` is its class's answer with those names hidden; else None."""
  try:
    attributes = vars(dofn)
  except TypeError:  # __slots__
    return None
  if not _is_static(type(dofn)) or any(
      isinstance(v, types.MethodType) for v in attributes.values()):
    return None
  return frozenset(name for name in attributes if hasattr(type(dofn), name))


def _remembering_specs(
    get_dofn_specs: Callable[[Any], Any]
) -> Callable[[Any], Tuple[Set[Any], Set[Any]]]:

  # DoFn class -> {the names its instance's attributes hide: (state specs,
  # timer specs)}, for the instances _class_key answers for.
  class_specs: 'weakref.WeakKeyDictionary[type, Dict[FrozenSet[str], _SpecSets]]'
  class_specs = weakref.WeakKeyDictionary()

  def specs_of(dofn) -> _SpecSets:
    key = _class_key(dofn)
    by_class = class_specs.get(type(dofn)) if key is not None else None
    if by_class is not None and key in by_class:
      return by_class[key]
    state_specs, timer_specs = get_dofn_specs(dofn)
    specs = (frozenset(state_specs), frozenset(timer_specs))
    if key is not None:
      class_specs.setdefault(type(dofn), {})[key] = specs
    return specs

  def remembered_get_dofn_specs(dofn):
    known = _dofn_specs.get(id(dofn))
    if known is None or known[0]() is not dofn:
      state_specs, timer_specs = specs_of(dofn)
      try:
        ref = weakref.ref(dofn, _forget(id(dofn)))
      except TypeError:  # cannot be referenced weakly: not remembered
        return set(state_specs), set(timer_specs)
      known = (ref, state_specs, timer_specs)
      _dofn_specs[id(dofn)] = known
    return set(known[1]), set(known[2])

  remembered_get_dofn_specs.beam_get_dofn_specs = get_dofn_specs  # type: ignore[attr-defined]
  return remembered_get_dofn_specs


def install() -> None:
  """Idempotent; a Beam without one of the functions keeps it as it is."""
  # Imported here: importing the package must not import Beam.
  from apache_beam.transforms import core  # pylint: disable=g-import-not-at-top
  from apache_beam.transforms import userstate  # pylint: disable=g-import-not-at-top

  current = getattr(core, 'get_signature', None)
  if current is not None and not hasattr(current, 'beam_get_signature'):
    core.get_signature = _remembering(current)
  current = getattr(userstate, 'get_dofn_specs', None)
  if current is not None and not hasattr(current, 'beam_get_dofn_specs'):
    # The wrapper returns what Beam's function returns, typed loosely.
    userstate.get_dofn_specs = _remembering_specs(  # type: ignore[assignment]
        current)
