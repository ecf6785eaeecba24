"""`make run` skips the preprocess and the training when nothing they read
changed, and redoes exactly the steps whose inputs, config, code or command
line did.

Checked with `make -n` (make prints the commands it would run and runs
none), against a scratch output directory where the steps' last outputs
(preprocess/manifest.json, model/metrics.json) are given the ages a finished
run leaves, and a copy of the config, so nothing in the checkout is touched.
"""

import os
import pathlib
import shutil
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PREPROCESS = 'pipeline.preprocess'
TRAIN = 'trainer.task'


def _newest_prerequisite() -> float:
  """The latest modification time among what the two steps depend on in
  the checkout (the code, the venv's install stamp, the input data `make
  run` obtained under data/): the outputs must be newer, as after a real
  run (a fresh clone's files are minutes old; its data can be obtained
  seconds after the install stamp)."""
  paths = [
      ROOT / 'setup.py', ROOT / 'requirements.lock',
      ROOT / '.venv' / '.installed'
  ]
  for package in ('core', 'pipeline', 'trainer'):
    paths += (ROOT / package).rglob('*.py')
  paths += (p for p in (ROOT / 'data').rglob('*') if p.is_file())
  newest = max(p.stat().st_mtime for p in paths if p.exists())
  wait = newest + 30 - time.time()
  if wait > 0:  # keep every time set below in the past
    time.sleep(wait)
  return newest


@pytest.fixture
def finished(tmp_path):
  """A scratch OUT as a finished `make run` leaves it, and its config."""
  config_dir = tmp_path / 'config'
  shutil.copytree(
      ROOT / 'schemas',
      config_dir,
      ignore=shutil.ignore_patterns('__pycache__', '*.py'))
  out = tmp_path / 'out'
  (out / 'preprocess').mkdir(parents=True)
  (out / 'model').mkdir()
  (out / 'preprocess' / 'manifest.json').write_text('{}')
  (out / 'model' / 'metrics.json').write_text('{}')
  run = Run(out, config_dir / 'census.yaml', _newest_prerequisite())
  run.plan()  # records the command lines, as a real run does
  run.settle()
  return run


class Run:

  def __init__(self, out: pathlib.Path, config: pathlib.Path, base: float):
    self.out, self.config, self.base = out, config, base

  def plan(self, **variables: str):
    """The steps `make run` would run now, of the two that can be skipped."""
    args = [f'OUT={self.out}', f'CONFIG={self.config}']
    args += [f'{k}={v}' for k, v in variables.items()]
    proc = subprocess.run(['make', '-n', 'run', *args],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          check=True)
    return [s for s in (PREPROCESS, TRAIN) if f'-m {s} ' in proc.stdout]

  def settle(self):
    """Times as after a finished run: the config, then the command lines
    recorded, then the preprocess output, then the model."""
    for path, after in [(self.config.parent, 1), (self.out / '.make', 2),
                        (self.out / 'preprocess' / 'manifest.json', 3),
                        (self.out / 'model' / 'metrics.json', 4)]:
      for p in [path] if path.is_file() else path.iterdir():
        os.utime(p, (self.base + after, self.base + after))

  def touch(self, path: pathlib.Path):
    """Changed after the outputs were written."""
    os.utime(path, (self.base + 10, self.base + 10))


def test_nothing_changed_skips_both_steps(finished):
  assert finished.plan() == []


def test_a_changed_config_file_redoes_both(finished):
  finished.touch(finished.config.parent / 'census_schema.pbtxt')
  assert finished.plan() == [PREPROCESS, TRAIN]


def test_changed_training_flags_redo_the_training_only(finished):
  assert finished.plan(TRAIN_ARGS='--epochs 3') == [TRAIN]
  finished.settle()
  assert finished.plan(TRAIN_ARGS='--epochs 3') == []
  # back to the flags of the model before: the model on disk is not that one
  assert finished.plan() == [TRAIN]


def test_changed_beam_flags_redo_both(finished):
  assert finished.plan(BEAM_ARGS='--direct_num_workers=2') == [
      PREPROCESS, TRAIN
  ]


def test_a_missing_output_is_redone(finished):
  (finished.out / 'model' / 'metrics.json').unlink()
  assert finished.plan() == [TRAIN]
  (finished.out / 'preprocess' / 'manifest.json').unlink()
  assert finished.plan() == [PREPROCESS, TRAIN]
