"""A job run through a job server ends with the exit code it earned.

With `--environment_type LOOPBACK` Beam runs the SDK harness in daemon
threads of the launcher process. When the job server reports the job done,
the harness may still be tearing down its DoFns (for tf.Transform: releasing
TensorFlow resources); if the interpreter finalizes meanwhile, the thread is
stopped inside TensorFlow's C++ code and the process aborts (SIGABRT) after a
successful job. `process_exit.exit_after_workers` waits for those threads.

The job below has a DoFn whose teardown works in TensorFlow for a few seconds
and then writes a marker file: the marker proves the teardown ran to its end
before the process exited.
"""

import os
import subprocess
import sys

from tests.conftest import ROOT

JOB = '''
import pathlib, sys, time
import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from pipeline import process_exit

marker = pathlib.Path(sys.argv[1])


class SlowTeardown(beam.DoFn):

  def process(self, x):
    yield x

  def teardown(self):
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
      tf.function(lambda: tf.constant(1) + 1).get_concrete_function()
    marker.write_text('torn down')


p = beam.Pipeline(options=PipelineOptions([
    '--runner=PortableRunner', '--job_endpoint=embed',
    '--environment_type=LOOPBACK']))
_ = p | beam.Create([1, 2, 3]) | beam.ParDo(SlowTeardown())
p.run().wait_until_finish()
print('job done', flush=True)
if sys.argv[2] == 'wait':
  process_exit.exit_after_workers(0)
'''


def _run(tmp_path, mode):
  script = tmp_path / 'job.py'
  script.write_text(JOB)
  marker = tmp_path / f'marker-{mode}'
  env = dict(
      os.environ,
      TF_CPP_MIN_LOG_LEVEL='3',
      PYTHONWARNINGS='ignore',
      PYTHONPATH=str(ROOT))
  proc = subprocess.run(
      [sys.executable, str(script),
       str(marker), mode],
      cwd=str(tmp_path),
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
      check=False)
  return proc, marker


def test_exit_waits_for_the_loopback_worker_teardown(tmp_path):
  proc, marker = _run(tmp_path, 'wait')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'job done' in proc.stdout
  assert marker.read_text() == 'torn down'


def test_without_waiting_the_teardown_is_cut_short(tmp_path):
  """Why the wait is needed: Beam itself does not join the harness threads.

  (The abort itself needs the interpreter to stop the thread at an unlucky
  moment, so only the cut-short teardown is asserted here.)
  """
  proc, marker = _run(tmp_path, 'no-wait')
  assert 'job done' in proc.stdout, proc.stderr[-3000:]
  assert not marker.exists()
