"""Beam's DoFn signature inspection, remembered per function: the same
answers as Beam's own, asked of Beam once per function and binding."""

import functools

import apache_beam as beam
from apache_beam.coders import VarIntCoder
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
          'print(core is not None and '
          'hasattr(core.get_signature, "beam_get_signature"))')
  proc = run_python(['-c', code], runner_outputs.env())
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split()[-1] == str(installed)


def test_install_is_idempotent():
  installed = core.get_signature
  beam_signatures.install()
  assert core.get_signature is installed


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
