"""Beam's DoFn signature inspection, remembered per function and per DoFn:
the same answers as Beam's own, asked of Beam once per function and binding,
and once per DoFn instance."""

import functools
import gc

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
from apache_beam.transforms import core
from apache_beam.transforms import userstate
from apache_beam.typehints import decorators
import pytest

from pipeline import beam_signatures
from tests.conftest import run_python
from tests.pipeline import runner_outputs

beam_signatures.install()


class _Plain(beam.DoFn):

  def process(self, element, scale=2):
    yield element * scale

  @classmethod
  def build(cls, x, y=1):
    return cls()


class _Stateful(beam.DoFn):
  COUNT = userstate.ReadModifyWriteStateSpec('count', VarIntCoder())

  def process(self, element, count=beam.DoFn.StateParam(COUNT)):  # noqa: B008
    yield element


_COUNT_PARAM = beam.DoFn.StateParam(_Stateful.COUNT)


class _TwiceTheSameState(beam.DoFn):

  def process(self, element, a=_COUNT_PARAM, b=_COUNT_PARAM):
    yield element


class _Timed(beam.DoFn):
  LAST = userstate.ReadModifyWriteStateSpec('last', VarIntCoder())
  FLUSH = userstate.TimerSpec('flush', userstate.TimeDomain.WATERMARK)

  def process(
      self,
      element,
      last=beam.DoFn.StateParam(LAST),  # noqa: B008
      flush=beam.DoFn.TimerParam(FLUSH)):  # noqa: B008
    yield element


class _RunningCount(beam.DoFn):
  """Emits (key, how many values of the key came so far)."""
  COUNT = userstate.ReadModifyWriteStateSpec('count', VarIntCoder())

  def process(self, element, count=beam.DoFn.StateParam(COUNT)):  # noqa: B008
    seen = (count.read() or 0) + 1
    count.write(seen)
    yield element[0], seen


def _stateful_element(element, count=_COUNT_PARAM):
  return element


class _Callable:

  def __call__(self, a, b=3):
    return a


def _function(a, b, *args, c=1, **kwargs):
  return a


@pytest.mark.parametrize(
    'imports, installed',
    [
        # The preprocess command, after importing Beam quietly.
        ('import pipeline.preprocess', True),
        # A worker: Beam first, then the job's DoFns' modules.
        ('import apache_beam; import pipeline.sinks', True),
        # The package alone imports no Beam, so installs nothing.
        ('import pipeline', False),
    ])
def test_installed_by_the_command_and_in_workers(imports, installed):
  code = (f'{imports}\nimport sys\n'
          'core = sys.modules.get("apache_beam.transforms.core")\n'
          'state = sys.modules.get("apache_beam.transforms.userstate")\n'
          'cache = sys.modules.get("apache_beam.runners.worker.statecache")\n'
          'pickle = sys.modules.get('
          '"apache_beam.internal.cloudpickle_pickler")\n'
          'print(core is not None and '
          'hasattr(core.get_signature, "beam_get_signature") and '
          'hasattr(state.get_dofn_specs, "beam_get_dofn_specs") and '
          'hasattr(cache.get_deep_size, "beam_get_deep_size") and '
          'hasattr(pickle.bz2, "beam_bz2"))')
  proc = run_python(['-c', code], runner_outputs.env())
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split()[-1] == str(installed)


def test_install_is_idempotent():
  installed = core.get_signature, userstate.get_dofn_specs
  beam_signatures.install()
  assert (core.get_signature, userstate.get_dofn_specs) == installed


def test_same_signatures_as_beam():
  beams = decorators.get_signature
  for func in [
      _function,
      _Plain().process, _Plain.process, _Plain.build, lambda x, y=[1]: x,
      str.strip, len,
      functools.partial(_function, 1),
      _Callable(),
      _Stateful().process
  ]:
    assert core.get_signature(func) == beams(func), func
    assert core.get_signature(func) == beams(func), func  # remembered


def test_beam_is_asked_once_per_function_and_binding():
  asked = []

  def counting(func):
    asked.append(func)
    return decorators.get_signature(func)

  remembered = beam_signatures._remembering(counting)

  def local(a, b=2):
    return a

  class Local:

    def method(self, x):
      return x

  for _ in range(3):
    remembered(local)
    remembered(Local().method)
    remembered(Local.method)
    remembered(len)  # not a Python function: asked every time
  assert [getattr(f, '__name__', f) for f in asked
         ] == ['local', 'method', 'method', 'len', 'len', 'len']


def test_stateful_dofns_are_still_told_apart():
  assert userstate.is_stateful_dofn(_Stateful())
  assert not userstate.is_stateful_dofn(_Plain())
  assert userstate.is_stateful_dofn(_Stateful())


def test_same_dofn_specs_as_beam():
  beams = userstate.get_dofn_specs.beam_get_dofn_specs
  for dofn in [
      _Plain(),
      _Stateful(),
      _Timed(),
      # Map's DoFn takes its parameters from the function it wraps.
      beam.Map(_stateful_element).fn,
      beam.Map(len).fn,
  ]:
    expected = beams(dofn)
    first = userstate.get_dofn_specs(dofn)
    assert first == expected, dofn
    first[0].clear()  # each caller's sets are its own
    assert userstate.get_dofn_specs(dofn) == expected, dofn  # remembered
  state, timers = userstate.get_dofn_specs(_Timed())
  assert [s.name for s in state] == ['last']
  assert [t.name for t in timers] == [_Timed.FLUSH.name]


def test_beam_is_asked_once_per_dofn_instance():
  asked = []

  def counting(dofn):
    asked.append(type(dofn).__name__)
    return userstate.get_dofn_specs.beam_get_dofn_specs(dofn)

  remembered = beam_signatures._remembering_specs(counting)
  plain, stateful = _Plain(), _Stateful()
  for _ in range(3):
    remembered(plain)
    remembered(stateful)
  # Another instance that holds a bound method: its own answer.
  holding = _Plain()
  holding.extra = _Stateful().process
  assert remembered(holding) == userstate.get_dofn_specs.beam_get_dofn_specs(
      holding)
  assert asked == ['_Plain', '_Stateful', '_Plain']
  # Forgotten with the instance.
  key = id(stateful)
  assert key in beam_signatures._dofn_specs
  del stateful
  gc.collect()
  assert key not in beam_signatures._dofn_specs


class _WithProperty(beam.DoFn):

  @property
  def extra(self):
    return self.held

  def process(self, element):
    yield element


class _WithGetattr(beam.DoFn):

  def __getattr__(self, name):
    if name == 'extra':
      return _Stateful().process
    raise AttributeError(name)

  def __dir__(self):
    return list(super().__dir__()) + ['extra']

  def process(self, element):
    yield element


def test_beam_is_asked_once_per_class_unless_an_instance_can_differ():
  """Instances of a class answer alike when nothing in them can hold
  another method: the class's answer, asked once. An instance holding a
  bound method, a class computing attributes (a property, __getattr__) and
  an instance attribute hiding a method are asked about themselves, and
  every answer is Beam's."""
  asked = []

  def counting(dofn):
    asked.append(type(dofn).__name__)
    return userstate.get_dofn_specs.beam_get_dofn_specs(dofn)

  remembered = beam_signatures._remembering_specs(counting)
  beams = userstate.get_dofn_specs.beam_get_dofn_specs
  plain, stateful = _Plain(), _Stateful()
  for dofn in [plain, _Plain(), _Plain(), stateful, _Stateful()]:
    assert remembered(dofn) == beams(dofn)
  assert asked == ['_Plain', '_Stateful']

  holding = _Plain()
  holding.extra = _Stateful().process  # a bound method: a state param
  with_property = _WithProperty()
  with_property.held = _Stateful().process
  hiding = _Stateful()
  hiding.process = len  # hides the stateful process method
  for dofn in [holding, with_property, _WithGetattr(), hiding]:
    expected = beams(dofn)
    assert remembered(dofn) == expected, dofn
  assert [s.name for s in remembered(holding)[0]] == ['count']
  assert [s.name for s in remembered(with_property)[0]] == ['count']
  assert [s.name for s in remembered(_WithGetattr())[0]] == ['count']
  assert remembered(hiding) == (set(), set())
  # Not the class's answer: each was asked (the last _WithGetattr too).
  assert asked[2:] == [
      '_Plain', '_WithProperty', '_WithGetattr', '_Stateful', '_WithGetattr'
  ]
  # Another instance hiding the same names shares that answer.
  again = _Stateful()
  again.process = str
  assert remembered(again) == (set(), set())
  assert len(asked) == 7


def test_a_rejected_dofn_is_rejected_every_time():
  dofn = _TwiceTheSameState()
  for _ in range(2):
    with pytest.raises(ValueError, match='duplicate process method parameters'):
      userstate.get_dofn_specs(dofn)


def test_stateful_dofn_keeps_its_state_in_a_pipeline():
  with test_pipeline.TestPipeline() as p:
    counts = (
        p
        | beam.Create([('a', 1), ('b', 1), ('a', 1), ('a', 1)])
        | beam.ParDo(_RunningCount()))
    assert_that(counts, equal_to([('a', 1), ('a', 2), ('a', 3), ('b', 1)]))
