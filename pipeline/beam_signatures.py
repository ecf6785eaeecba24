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
A DoFn that Beam rejects is asked about again, and rejected again.

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


def _remembering_specs(
    get_dofn_specs: Callable[[Any], Any]
) -> Callable[[Any], Tuple[Set[Any], Set[Any]]]:

  def remembered_get_dofn_specs(dofn):
    known = _dofn_specs.get(id(dofn))
    if known is None or known[0]() is not dofn:
      state_specs, timer_specs = get_dofn_specs(dofn)
      try:
        ref = weakref.ref(dofn, _forget(id(dofn)))
      except TypeError:  # cannot be referenced weakly: not remembered
        return state_specs, timer_specs
      known = (ref, frozenset(state_specs), frozenset(timer_specs))
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
