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

import filecmp
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tests'))

import datagen  # pylint: disable=g-import-not-at-top,wrong-import-position

TOY_CONFIG = str(ROOT / 'tests' / 'data' / 'toy.yaml')
RUN_TIMEOUT_S = 600
# Files whose bytes legitimately differ between processes (see the docstring).
NOT_COMPARED = ('manifest.json', 'transform_fn/saved_model.pb',
                'transform_fn/fingerprint.pb', 'stats/')
BAD_LINES = ['1.0, 2, paris, red, note',  # wrong arity
             'tall, 2, paris, red, note, yes',  # not a number
             '170, 2, paris, purple, note, yes',  # value not allowed
             '170, 2, paris, red, note, maybe']  # unknown label


def _env():
  env = dict(os.environ)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  env.setdefault('PYTHONWARNINGS', 'ignore')
  env['PYTHONPATH'] = os.pathsep.join(
      [str(ROOT)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
  return env


@pytest.fixture(scope='module')
def sample(tmp_path_factory):
  """Three input files (one larger than a read chunk) and a test file, with a
  few bad lines so that the quarantine path runs too."""
  d = tmp_path_factory.mktemp('runners_sample')
  sizes = {'part-0.csv': 3000, 'part-1.csv': 5000, 'part-2.csv': 2000}
  for i, (name, n) in enumerate(sorted(sizes.items())):
    rows = datagen.toy_rows(n, seed=100 + i)
    rows[n // 2:n // 2] = BAD_LINES[i:i + 2]
    datagen.write_lines(str(d / name), rows, header=datagen.TOY_HEADER)
  datagen.write_lines(str(d / 'test.csv'), datagen.toy_rows(1500, seed=200),
                      header=datagen.TOY_HEADER)
  return {'input': str(d / 'part-*.csv'), 'test_input': str(d / 'test.csv'),
          'dir': d}


def _preprocess(sample, out, *beam_args):
  cmd = [sys.executable, '-m', 'pipeline.preprocess', '--config', TOY_CONFIG,
         '--input', sample['input'], '--test-input', sample['test_input'],
         '--output-dir', out, *beam_args]
  start = time.monotonic()
  proc = subprocess.run(cmd, cwd=str(ROOT), env=_env(), capture_output=True,
                        text=True, timeout=RUN_TIMEOUT_S, check=False)
  assert proc.returncode == 0, (
      f'{" ".join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-6000:]}')
  print(f'{" ".join(beam_args) or "in-process"}: '
        f'{time.monotonic() - start:.1f}s')
  with open(os.path.join(out, 'manifest.json'), encoding='utf-8') as f:
    return json.load(f)


@pytest.fixture(scope='module')
def reference(sample):
  out = str(sample['dir'] / 'in_process')
  return out, _preprocess(sample, out)


class JobService:
  """Beam's Python job service in a subprocess, on a free loopback port.

  Started with --port 0 and --port_file, so the service binds the port itself
  and reports it: no window in which another process can take a port picked
  here.
  """

  def __init__(self, workdir: pathlib.Path):
    self._port_file = workdir / 'job_service.port'
    self._log = open(workdir / 'job_service.log', 'w', encoding='utf-8')
    self._proc = subprocess.Popen(
        [sys.executable, '-m',
         'apache_beam.runners.portability.local_job_service_main',
         '--port', '0', '--port_file', str(self._port_file),
         '--staging_dir', str(workdir / 'job_service_staging')],
        cwd=str(ROOT), env=_env(), stdout=self._log, stderr=subprocess.STDOUT)

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


def _files(root):
  out = {}
  for dirpath, _, names in os.walk(root):
    for name in names:
      path = os.path.join(dirpath, name)
      out[os.path.relpath(path, root).replace(os.sep, '/')] = path
  return out


def _quarantine_lines(root):
  lines = []
  for rel, path in _files(root).items():
    if rel.startswith('quarantine/'):
      with open(path, encoding='utf-8') as f:
        lines.extend(f.read().splitlines())
  return sorted(lines)


def _manifest_counts(doc):
  return {k: doc[k] for k in ('rows', 'inputs', 'splits',
                              'quarantined_by_reason')}


def assert_same_outputs(reference, out, manifest):
  ref_dir, ref_manifest = reference
  ref_files, files = _files(ref_dir), _files(out)
  data = [rel for rel in ref_files if rel.startswith('data/')]
  assert data and all(rel.endswith('.tfrecord.gz') for rel in data)
  assert any(rel.startswith('transform_fn/assets/') for rel in ref_files)
  assert sorted(r for r in files if not r.startswith('quarantine/')) == sorted(
      r for r in ref_files if not r.startswith('quarantine/'))
  compared = [rel for rel in ref_files
              if not rel.startswith(NOT_COMPARED + ('quarantine/',))]
  differ = [rel for rel in compared
            if not filecmp.cmp(ref_files[rel], files[rel], shallow=False)]
  assert not differ, f'files differ from the in-process run: {differ}'
  assert _quarantine_lines(out) == _quarantine_lines(ref_dir)
  counts = _manifest_counts(manifest)
  assert counts == _manifest_counts(ref_manifest)
  assert counts['rows']['quarantined'] == 6
  assert counts['rows']['test'] == 1500


def test_portable_runner_matches_in_process(sample, reference, tmp_path):
  service = JobService(tmp_path)
  try:
    endpoint = service.endpoint()
    out = str(tmp_path / 'portable')
    manifest = _preprocess(sample, out, '--runner', 'PortableRunner',
                           '--job_endpoint', endpoint,
                           '--environment_type', 'LOOPBACK')
  finally:
    service.stop()
  # Not 'runner': PortableRunner clears it in the options object it is given
  # (the job service, not a runner name, is the entry point in portability).
  options = manifest['pipeline_options']
  assert options['job_endpoint'] == endpoint
  assert options['environment_type'] == 'LOOPBACK'
  assert_same_outputs(reference, out, manifest)


def test_multi_processing_direct_runner_matches_in_process(sample, reference,
                                                           tmp_path):
  out = str(tmp_path / 'multi_processing')
  manifest = _preprocess(sample, out, '--direct_running_mode',
                         'multi_processing', '--direct_num_workers', '2')
  options = manifest['pipeline_options']
  assert options['direct_running_mode'] == 'multi_processing'
  assert options['direct_num_workers'] == 2
  assert_same_outputs(reference, out, manifest)
