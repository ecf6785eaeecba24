"""Every command starts without library noise on stderr.

Importing TensorFlow, TFDV and Beam prints CUDA registration errors, TFDV's
IPython notice and Google client FutureWarnings unless a command imports
them through core/quiet.py. `--help` imports everything a command imports
and prints its usage to stdout, so its stderr must be empty. Warnings are
left at Python's defaults here, as a user gets them.
"""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

COMMANDS = [
    'pipeline.preprocess', 'pipeline.schema', 'pipeline.skew', 'trainer.task',
    'trainer.push', 'trainer.predict', 'trainer.rollback', 'trainer.serve'
]


@pytest.mark.parametrize('module', COMMANDS)
def test_help_prints_no_library_noise(module):
  env = {
      k: v
      for k, v in os.environ.items()
      if k not in ('PYTHONWARNINGS', 'TF_CPP_MIN_LOG_LEVEL')
  }
  env['PYTHONPATH'] = str(ROOT)
  proc = subprocess.run([sys.executable, '-m', module, '--help'],
                        cwd=str(ROOT),
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'usage:' in proc.stdout
  assert proc.stderr == '', proc.stderr[-2000:]
