"""Every command starts without library noise on stderr.

Importing TensorFlow, TFDV and Beam prints CUDA registration errors, TFDV's
IPython notice and Google client FutureWarnings unless a command imports
them through core/quiet.py. `--help` imports everything a command imports
and prints its usage to stdout, so its stderr must be empty. Warnings are
left at Python's defaults here, as a user gets them.
"""

import os

import pytest

from tests.conftest import default_verbosity
from tests.conftest import ROOT
from tests.conftest import run_python

COMMANDS = [
    'pipeline.preprocess', 'pipeline.schema', 'pipeline.skew', 'trainer.task',
    'trainer.push', 'trainer.predict', 'trainer.rollback', 'trainer.serve'
]


@pytest.mark.parametrize('module', COMMANDS)
def test_help_prints_no_library_noise(module):
  env = default_verbosity(os.environ)
  env['PYTHONPATH'] = str(ROOT)
  proc = run_python(['-m', module, '--help'], env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'usage:' in proc.stdout
  assert proc.stderr == '', proc.stderr[-2000:]


def test_a_command_that_reads_datasets_prints_only_its_own_lines(
    trainer_toy_model, tmp_path):
  """TensorFlow's C++ runtime logs a warning at the end of every tf.data
  iteration (trainer.push reads the labelled rows and scores them through
  datasets); the command drops that line and nothing else
  (core/stderr_relay.py)."""
  model_dir, _ = trainer_toy_model
  env = default_verbosity(os.environ)
  env['PYTHONPATH'] = str(ROOT)
  proc = run_python([
      '-m', 'trainer.push', '--model-dir', model_dir, '--serving-dir',
      str(tmp_path / 'serving')
  ], env)
  assert proc.returncode in (0, 1), proc.stderr[-2000:]
  assert 'candidate' in proc.stdout
  assert proc.stderr == '', proc.stderr[-2000:]
