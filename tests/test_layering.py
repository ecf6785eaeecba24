"""The package layering holds: what a module imports is what it may import.

core/ is shared by every layer, so it must stay cheap: no Apache Beam, no
tf.Transform, no TFDV, no Keras. The server and trainer.predict run where
only an export exists (a serving container, a laptop): they load neither
Beam nor TFDV nor tf.Transform, and no Keras (not the tf_keras that
TensorFlow's own import loads, about a second of their start).
Commands that score without drawing load no matplotlib.
Each check runs in a fresh interpreter, since a module imported once by
another test would hide it.
"""

import json
import os

import pytest

from tests.conftest import ROOT
from tests.conftest import run_python

HEAVY = ('apache_beam', 'tensorflow_data_validation',
         'tensorflow_transform.beam', 'tensorflow_transform', 'tf_keras',
         'tfx_bsl')


def _loaded_after(modules, heavy=HEAVY):
  code = ('import importlib, json, sys\n'
          f'for m in {list(modules)!r}:\n'
          '  importlib.import_module(m)\n'
          f'print(json.dumps([m for m in {list(heavy)!r} if m in '
          'sys.modules]))\n')
  env = dict(
      os.environ,
      TF_CPP_MIN_LOG_LEVEL='3',
      PYTHONWARNINGS='ignore',
      PYTHONPATH=str(ROOT))
  # Each entry point sets it itself (core/quiet.py); tf.Transform sets it in
  # this test process once any test module has imported it.
  env.pop('TF_USE_LEGACY_KERAS', None)
  proc = run_python(['-c', code], env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_core_imports_nothing_heavy():
  loaded = _loaded_after([
      'core.config', 'core.values', 'core.layout', 'core.windows',
      'core.hashing', 'core.features', 'core.html', 'core.errors'
  ])
  assert not loaded, f'core/ loaded {sorted(loaded)}'


@pytest.mark.parametrize(
    'entry',
    ['serving.server', 'trainer.serve', 'serving.__main__', 'trainer.predict'])
def test_serving_and_predict_load_no_beam(entry):
  loaded = _loaded_after([entry], HEAVY + ('keras', 'matplotlib'))
  assert not loaded & {
      'apache_beam', 'tensorflow_data_validation', 'tensorflow_transform.beam'
  }, sorted(loaded)
  # Nor anything else the export does not need to run: no Keras at all, not
  # even the tf_keras that TensorFlow's own import loads (core/quiet.py).
  assert not loaded, sorted(loaded)


@pytest.mark.parametrize('entry', ['trainer.push', 'trainer.rollback'])
def test_push_and_rollback_load_no_plotting_and_no_keras(entry):
  # matplotlib is for the training report's figures; trainer.push scores
  # with the same heads and draws nothing (its import is 0.6-0.8 s), and
  # neither command builds a model: the heads import Keras only to build one.
  loaded = _loaded_after([entry], ('matplotlib', 'keras', 'tf_keras'))
  assert not loaded, sorted(loaded)
