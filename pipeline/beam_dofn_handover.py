"""A ParDo set up by Beam's SDK worker without its DoFn pickled once more.

When the SDK worker (Beam 2.61, `runners/worker/bundle_processor.py`,
`_create_pardo_operation`) sets up a ParDo, it unpickles the ParDo's payload
(the DoFn, its arguments and its side inputs' tags) and, because the payload
carries no windowing, pickles those objects again with the windowing of the
ParDo's input added. The operation it makes from that pickle unpickles it
twice (`operations.DoOperation`: when made, for the DoFn's batching methods,
and at set-up, for the DoFn that runs). For the Adult preprocess that is
353 pickles made and bz2-compressed at level 9, 0.34 s of one core, while
the runner sets up its stages.

`install()` gives those two modules of Beam a pickler that hands the objects
over instead. A pickle asked for right after an unpickle, of the same four
objects (by identity) with windowing where the payload had none, becomes a
`_Handover` of the payload and that windowing, not a pickle. Its first
unpickle returns those objects, which nothing else holds by then (Beam's
function drops them once it has the pickle); each later one unpickles the
payload afresh and adds the windowing. So every copy the operation gets is
one Beam's own round trip would have given, and the windowing is the
runner's own object, shared as Beam shares it with the ParDo's other
operations. Every other pickle and unpickle is Beam's.
"""

import threading
import types
from typing import Any, Optional, Tuple

# The modules whose `pickler` is replaced: the one that re-pickles, and the
# one that unpickles what it made.
_MODULES = (
    'apache_beam.runners.worker.bundle_processor',
    'apache_beam.runners.worker.operations',
)
# A ParDo's payload: (fn, args, kwargs, side input tags and types, windowing).
_PAYLOAD_LENGTH = 5


class _Handover:
  """The re-pickle of an unpickled payload with windowing added."""

  __slots__ = ('payload', 'windowing', '_objects', '_lock')

  def __init__(self, payload, objects: Tuple[Any, ...]):
    self.payload = payload
    self.windowing = objects[-1]
    self._objects: Optional[Tuple[Any, ...]] = objects
    self._lock = threading.Lock()

  def unpickled(self, loads) -> Tuple[Any, ...]:
    with self._lock:
      objects, self._objects = self._objects, None
    if objects is not None:
      return objects
    return tuple(loads(self.payload)[:-1]) + (self.windowing,)


class HandingOverPickler(types.ModuleType):
  """Beam's pickler module, but for the re-pickle above."""

  def __init__(self, pickler: types.ModuleType):
    super().__init__(pickler.__name__, pickler.__doc__)
    self.beams = pickler
    # The last payload each thread unpickled here, and what it gave.
    self._last = threading.local()

  def loads(self, encoded, *args, **kwargs):
    if isinstance(encoded, _Handover):
      return encoded.unpickled(self.beams.loads)
    objects = self.beams.loads(encoded, *args, **kwargs)
    self._last.unpickled = (encoded, objects)
    return objects

  def dumps(self, o, *args, **kwargs):
    last = getattr(self._last, 'unpickled', None)
    self._last.unpickled = None
    if (last is not None and not args and not kwargs and
        _is_windowing_added(last[1], o)):
      return _Handover(last[0], o)
    return self.beams.dumps(o, *args, **kwargs)

  def __getattr__(self, name):
    return getattr(self.beams, name)


# The one instance both modules share, once installed.
_HANDING_OVER: Optional[HandingOverPickler] = None


def _is_windowing_added(unpickled, o) -> bool:
  return (type(o) is tuple and isinstance(unpickled, tuple) and
          len(o) == len(unpickled) == _PAYLOAD_LENGTH and
          unpickled[-1] is None and o[-1] is not None and
          all(a is b for a, b in zip(o[:-1], unpickled[:-1])))


def install() -> None:
  """Idempotent; a Beam whose worker modules do not use its pickler module
    as above is left as it is."""
  # pylint: disable=g-import-not-at-top
  from apache_beam.internal import pickler

  import pipeline

  global _HANDING_OVER
  if _HANDING_OVER is None:
    _HANDING_OVER = HandingOverPickler(pickler)
  pipeline.replace_module_global(_MODULES, 'pickler', pickler, _HANDING_OVER)
