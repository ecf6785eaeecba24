"""The preprocess job run as a user runs it, and its outputs compared between
runs: what tests/pipeline/test_runners.py and test_engines.py share.

A run is `python -m pipeline.preprocess` in a subprocess, on a small sample
with a few bad lines (so that the quarantine path runs too). Two runs agree
when their data files and transform assets are equal byte for byte and their
quarantine lines and manifest counts are equal; the files in NOT_COMPARED
legitimately differ between processes.
"""

import filecmp
import json
import os
import subprocess
import sys
import time

from tests import datagen
from tests.conftest import default_verbosity
from tests.conftest import ROOT
from tests.conftest import TOY_CONFIG

RUN_TIMEOUT_S = 600
# Files whose bytes legitimately differ between processes: the manifest
# carries timings, the transform graph's protos embed process-specific
# names, and TFDV's statistics sum floats in whatever order bundles finish.
NOT_COMPARED = ('manifest.json', 'transform_fn/saved_model.pb',
                'transform_fn/fingerprint.pb', 'stats/')
BAD_LINES = [
    '1.0, 2, paris, red, note',  # wrong arity
    'tall, 2, paris, red, note, yes',  # not a number
    '170, 2, paris, purple, note, yes',  # value not allowed
    '170, 2, paris, red, note, maybe'
]  # unknown label
SAMPLE_QUARANTINED = 6
SAMPLE_TEST_ROWS = 1500


def env():
  """The environment of a child process: the repository importable, quiet."""
  child = dict(os.environ)
  child.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  child.setdefault('PYTHONWARNINGS', 'ignore')
  child['PYTHONPATH'] = os.pathsep.join(
      [str(ROOT)] + ([child['PYTHONPATH']] if child.get('PYTHONPATH') else []))
  return child


def write_sample(d):
  """Three input files (one larger than a read chunk) and a test file, with a
  few bad lines; returns the patterns to pass as --input and --test-input."""
  sizes = {'part-0.csv': 3000, 'part-1.csv': 5000, 'part-2.csv': 2000}
  for i, (name, n) in enumerate(sorted(sizes.items())):
    rows = datagen.toy_rows(n, seed=100 + i)
    rows[n // 2:n // 2] = BAD_LINES[i:i + 2]
    datagen.write_lines(str(d / name), rows, header=datagen.TOY_HEADER)
  datagen.write_lines(
      str(d / 'test.csv'),
      datagen.toy_rows(SAMPLE_TEST_ROWS, seed=200),
      header=datagen.TOY_HEADER)
  return {'input': str(d / 'part-*.csv'), 'test_input': str(d / 'test.csv')}


def as_user_runs_it():
  """The environment of a child process with Python's and TensorFlow's
  default verbosity, as a user has it: whatever the job prints shows."""
  return default_verbosity(env())


def run_preprocess(sample, out, *beam_args):
  """Runs the job on the sample into `out`; returns its manifest."""
  return run_preprocess_in(env(), sample, out, *beam_args)[0]


def run_preprocess_in(child_env, sample, out, *beam_args):
  """Runs the job on the sample into `out` with `child_env`; returns its
  manifest and what it printed on stderr."""
  cmd = [
      sys.executable, '-m', 'pipeline.preprocess', '--config', TOY_CONFIG,
      '--input', sample['input'], '--test-input', sample['test_input'],
      '--output-dir', out, *beam_args
  ]
  start = time.monotonic()
  proc = subprocess.run(
      cmd,
      cwd=str(ROOT),
      env=child_env,
      capture_output=True,
      text=True,
      timeout=RUN_TIMEOUT_S,
      check=False)
  assert proc.returncode == 0, (
      f'{" ".join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-6000:]}')
  print(f'{" ".join(beam_args) or "in-process"}: '
        f'{time.monotonic() - start:.1f}s')
  with open(os.path.join(out, 'manifest.json'), encoding='utf-8') as f:
    return json.load(f), proc.stderr


def files_under(root):
  """Relative path ('/'-separated) -> path of every file under root."""
  out = {}
  for dirpath, _, names in os.walk(root):
    for name in names:
      path = os.path.join(dirpath, name)
      out[os.path.relpath(path, root).replace(os.sep, '/')] = path
  return out


def _quarantine_lines(root):
  lines = []
  for rel, path in files_under(root).items():
    if rel.startswith('quarantine/'):
      with open(path, encoding='utf-8') as f:
        lines.extend(f.read().splitlines())
  return sorted(lines)


def _manifest_counts(doc):
  return {
      k: doc[k] for k in ('rows', 'inputs', 'splits', 'quarantined_by_reason')
  }


def assert_same_outputs(reference, out, manifest):
  """`out` (with its manifest) agrees with the reference run."""
  ref_dir, ref_manifest = reference
  ref_files, files = files_under(ref_dir), files_under(out)
  data = [rel for rel in ref_files if rel.startswith('data/')]
  assert data and all(rel.endswith('.tfrecord.gz') for rel in data)
  assert any(rel.startswith('transform_fn/assets/') for rel in ref_files)
  assert sorted(r for r in files if not r.startswith('quarantine/')) == sorted(
      r for r in ref_files if not r.startswith('quarantine/'))
  compared = [
      rel for rel in ref_files
      if not rel.startswith(NOT_COMPARED + ('quarantine/',))
  ]
  differ = [
      rel for rel in compared
      if not filecmp.cmp(ref_files[rel], files[rel], shallow=False)
  ]
  assert not differ, f'files differ from the in-process run: {differ}'
  assert _quarantine_lines(out) == _quarantine_lines(ref_dir)
  counts = _manifest_counts(manifest)
  assert counts == _manifest_counts(ref_manifest)
  assert counts['rows']['quarantined'] == SAMPLE_QUARANTINED
  assert counts['rows']['test'] == SAMPLE_TEST_ROWS
