"""A ParDo's DoFn handed to the operation Beam's worker sets up, not pickled
once more: the same results, windows and side inputs, and no re-pickle."""

import apache_beam as beam
from apache_beam.internal import pickler
from apache_beam.runners.worker import bundle_processor
from apache_beam.runners.worker import operations
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
from apache_beam.transforms import window
import pytest

from pipeline import beam_dofn_handover

beam_dofn_handover.install()


class _Tagged(beam.DoFn):
  """Runs only once set up; reads its arguments, a side input and the
    element's window."""

  def __init__(self, tag):
    self.tag = tag
    self.ready = False

  def setup(self):
    self.ready = True

  def process(self, x, offset, seen, w=beam.DoFn.WindowParam):
    assert self.ready
    yield self.tag, x + offset + sum(seen), int(w.start)


@pytest.fixture(name='repickled')
def _repickled(monkeypatch):
  """The pickles Beam's pickler makes of a _Tagged payload with windowing
    added, and the handovers made in their place."""
  made = {'pickles': 0, 'handovers': 0}
  dumps = pickler.dumps

  def counting_dumps(o, *args, **kwargs):
    if _is_tagged_payload(o):
      made['pickles'] += 1
    return dumps(o, *args, **kwargs)

  handover = beam_dofn_handover._Handover  # pylint: disable=protected-access

  class CountedHandover(handover):
    __slots__ = ()

    def __init__(self, payload, objects):
      if _is_tagged_payload(objects):
        made['handovers'] += 1
      super().__init__(payload, objects)

  monkeypatch.setattr(pickler, 'dumps', counting_dumps)
  monkeypatch.setattr(beam_dofn_handover, '_Handover', CountedHandover)
  return made


def _is_tagged_payload(o):
  return (isinstance(o, tuple) and len(o) == 5 and isinstance(o[0], _Tagged) and
          o[-1] is not None)


def test_installed_and_idempotent():
  beam_dofn_handover.install()
  beam_dofn_handover.install()
  for module in (bundle_processor, operations):
    assert isinstance(module.pickler, beam_dofn_handover.HandingOverPickler)
    assert module.pickler.beams is pickler
    # Every other name is Beam's pickler's own.
    assert module.pickler.dump_session is pickler.dump_session


def test_a_windowed_pardo_runs_as_before_without_its_dofn_pickled_again(
    repickled):
  with beam.Pipeline() as p:
    seen = p | 'Seen' >> beam.Create([1, 2])
    out = (
        p
        | beam.Create([(3, 4), (15, 12), (27, 25)])
        | beam.MapTuple(window.TimestampedValue)
        | beam.WindowInto(window.FixedWindows(10))
        | beam.ParDo(_Tagged('t'), 100, beam.pvalue.AsList(seen)))
    assert_that(out, equal_to([('t', 106, 0), ('t', 118, 10), ('t', 130, 20)]))
  assert repickled == {'pickles': 0, 'handovers': 1}


def test_each_unpickle_of_a_handover_is_a_copy_of_its_own():
  windowing = beam.Windowing(window.FixedWindows(10))
  payload = pickler.dumps((_Tagged('t'), (1,), {'k': 2}, [], None))
  handing_over = beam_dofn_handover.HandingOverPickler(pickler)
  unpickled = handing_over.loads(payload)
  handover = handing_over.dumps(unpickled[:-1] + (windowing,))
  assert isinstance(handover, beam_dofn_handover._Handover)  # pylint: disable=protected-access
  first = handing_over.loads(handover)
  second = handing_over.loads(handover)
  third = handing_over.loads(handover)
  # The first is the unpickled objects themselves; each later one is
  # unpickled from the payload again.
  assert all(a is b for a, b in zip(first[:-1], unpickled[:-1]))
  assert second[0] is not first[0] and third[0] is not second[0]
  for copy in (first, second, third):
    assert copy[0].tag == 't' and copy[1:4] == ((1,), {'k': 2}, [])
    assert copy[-1] is windowing


def test_any_other_pickle_is_beams():
  handing_over = beam_dofn_handover.HandingOverPickler(pickler)
  windowing = beam.Windowing(window.FixedWindows(10))
  unpickled = handing_over.loads(
      pickler.dumps((_Tagged('t'), (), {}, [], None)))
  # Other objects than those unpickled, or windowing already there.
  others = [
      (_Tagged('u'),) + unpickled[1:-1] + (windowing,),
      unpickled[:-1] + (None,),
      unpickled[:-1] + (windowing, 'extra'),
  ]
  for other in others:
    handing_over.loads(pickler.dumps((_Tagged('t'), (), {}, [], None)))
    pickled = handing_over.dumps(other)
    assert isinstance(pickled, bytes)
    assert type(pickler.loads(pickled)[0]) is _Tagged
  # A pickle that does not follow the unpickle right away.
  unpickled = handing_over.loads(
      pickler.dumps((_Tagged('t'), (), {}, [], None)))
  handing_over.dumps('something else')
  assert isinstance(handing_over.dumps(unpickled[:-1] + (windowing,)), bytes)
