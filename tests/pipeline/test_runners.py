"""The preprocess job gives the same result on runners that serialize it.

The in-process DirectRunner never pickles a DoFn, never encodes an element
between stages and never runs two workers, so it cannot show whether the job
survives a remote engine. Here the same small sample is also run through

  * Beam's PortableRunner against Beam's own Python job service (a separate
    process on a free loopback port, SDK harness in LOOPBACK mode): the
    pipeline goes through the Runner API proto and the job service, as it does
    on Flink and Spark;
  * the DirectRunner in multi_processing mode with two workers: DoFns are
    pickled into other processes and bundles are split among them.

The outputs must equal the in-process run's: the TFRecord data files byte for
byte, the quarantine, the manifest counts and the transform_fn's assets
(vocabularies) and variables. transform_fn/saved_model.pb is not compared:
TensorFlow orders the nodes of a pruned function by object identity, so its
bytes differ between processes even for the same graph; the data written with
it is what is checked. TFDV statistics files are not compared either: their
floating-point sums are merged in whatever order bundles finish.

Every run goes through `python -m pipeline.preprocess`, the command users run,
and to a different output directory; nothing in the compared files embeds it.
"""

import pathlib
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.pipeline import runner_outputs

pytestmark = pytest.mark.long


class JobService:
  """Beam's Python job service in a subprocess, on a free loopback port.

  Started with --port 0 and --port_file, so the service binds the port itself
  and reports it: no window in which another process can take a port picked
  here.
  """

  def __init__(self, workdir: pathlib.Path):
    self._port_file = workdir / 'job_service.port'
    self._log = open(workdir / 'job_service.log', 'w', encoding='utf-8')
    self._proc = subprocess.Popen([
        sys.executable, '-m',
        'apache_beam.runners.portability.local_job_service_main', '--port', '0',
        '--port_file',
        str(self._port_file), '--staging_dir',
        str(workdir / 'job_service_staging')
    ],
                                  cwd=str(ROOT),
                                  env=runner_outputs.env(),
                                  stdout=self._log,
                                  stderr=subprocess.STDOUT)

  def endpoint(self, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while not self._port_file.exists():
      if self._proc.poll() is not None:
        raise RuntimeError('job service exited with status '
                           f'{self._proc.returncode}; see {self._log.name}')
      if time.monotonic() > deadline:
        raise RuntimeError(f'job service not up after {timeout_s}s')
      time.sleep(0.2)
    return f'localhost:{self._port_file.read_text().strip()}'

  def stop(self):
    self._proc.terminate()
    try:
      self._proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      self._proc.kill()
      self._proc.wait()
    self._log.close()


def test_portable_runner_matches_in_process(sample, reference, tmp_path):
  service = JobService(tmp_path)
  # The job's own temporary directory: what Beam leaves in it (a portable
  # run stages the job's dependencies in a directory it never removes) must
  # not outlive the job (pipeline/scratch.py).
  temp = tmp_path / 'tmpdir'
  temp.mkdir()
  try:
    endpoint = service.endpoint()
    out = str(tmp_path / 'portable')
    manifest, _ = runner_outputs.run_preprocess_in(
        dict(runner_outputs.env(),
             TMPDIR=str(temp)), sample, out, '--runner', 'PortableRunner',
        '--job_endpoint', endpoint, '--environment_type', 'LOOPBACK')
  finally:
    service.stop()
  assert sorted(p.name for p in temp.iterdir()) == []
  # Not 'runner': PortableRunner clears it in the options object it is given
  # (the job service, not a runner name, is the entry point in portability).
  options = manifest['pipeline_options']
  assert options['job_endpoint'] == endpoint
  assert options['environment_type'] == 'LOOPBACK'
  runner_outputs.assert_same_outputs(reference, out, manifest)


def test_multi_processing_direct_runner_matches_in_process(
    sample, reference, tmp_path):
  out = str(tmp_path / 'multi_processing')
  # With Python's and TensorFlow's default verbosity, as a user runs it: the
  # worker processes start and end as quietly as the command itself
  # (pipeline/worker_startup.py), so stderr holds only the job's own lines.
  manifest, stderr = runner_outputs.run_preprocess_in(
      runner_outputs.as_user_runs_it(), sample, out, '--direct_running_mode',
      'multi_processing', '--direct_num_workers', '2')
  options = manifest['pipeline_options']
  assert options['direct_running_mode'] == 'multi_processing'
  assert options['direct_num_workers'] == 2
  runner_outputs.assert_same_outputs(reference, out, manifest)
  # The job's own warnings: the toy config has no curated schema, and any
  # feature check.
  own = ('WARNING no curated TFDV schema (tfdv_schema: in toy)',
         'preprocess: warning: ')
  noise = [line for line in stderr.splitlines() if not line.startswith(own)]
  assert noise == [], stderr[-4000:]
  assert 'pipeline.worker_startup' in options['beam_plugins']
