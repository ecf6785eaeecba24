"""Every command starts without library noise on stderr, answers `--help`
and flag mistakes before it imports the libraries, and ends in one line when
stopped while it imports them; once running, a stop is one line too and
leaves nothing half-written.

Importing TensorFlow, TFDV and Beam prints CUDA registration errors, TFDV's
IPython notice and Google client FutureWarnings unless a command imports
them through core/quiet.py. A command given a path that does not exist
imports everything it imports at start-up, then stops with one error line,
so that line must be all of its stderr. Warnings are left at Python's
defaults here, as a user gets them.
"""

import glob
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Tuple

import pytest

from core.layout import ExportDir
from tests import datagen
from tests.conftest import default_verbosity
from tests.conftest import ROOT
from tests.conftest import run_python
from tests.conftest import signal_when

COMMANDS = [
    'pipeline.preprocess', 'pipeline.schema', 'pipeline.skew', 'trainer.task',
    'trainer.push', 'trainer.predict', 'trainer.rollback', 'trainer.serve'
]

# Flags that parse, naming a path that does not exist: the command imports
# its libraries, then stops with a usage error (exit 2).
_MISSING = '/nonexistent/x'
_FAILS_AFTER_IMPORTS = {
    'pipeline.preprocess': [
        '--config', _MISSING + '.yaml', '--input', _MISSING, '--output-dir',
        _MISSING
    ],
    'pipeline.schema': ['show', _MISSING + '.pbtxt'],
    'pipeline.skew': ['--preprocess-dir', _MISSING, '--serving-data', _MISSING],
    'trainer.task': ['--preprocess-dir', _MISSING, '--model-dir', _MISSING],
    'trainer.push': ['--model-dir', _MISSING, '--serving-dir', _MISSING],
    'trainer.predict': ['--model-dir', _MISSING, '--input', _MISSING],
    'trainer.rollback': ['--serving-dir', _MISSING],
    'trainer.serve': ['--model-dir', _MISSING],
}
# How each command names itself on stderr.
_NAMES = {
    'pipeline.preprocess': 'preprocess',
    'pipeline.schema': 'schema',
    'pipeline.skew': 'skew',
    'trainer.task': 'trainer',
    'trainer.push': 'push',
    'trainer.predict': 'predict',
    'trainer.rollback': 'rollback',
    'trainer.serve': 'serve',
}
# What a command imports once its flags parse, none of it for `--help`.
_HEAVY_MODULES = ('tensorflow', 'apache_beam', 'tensorflow_data_validation',
                  'tensorflow_transform', 'aiohttp')


def _env():
  env = default_verbosity(os.environ)
  env['PYTHONPATH'] = str(ROOT)
  return env


def _imported(importtime_log: str):
  """Top-level package names in `python -X importtime`'s log."""
  names = set()
  for line in importtime_log.splitlines():
    if line.startswith('import time:') and '|' in line:
      names.add(line.rsplit('|', 1)[1].strip().split('.')[0])
  return names


@pytest.mark.parametrize('module', COMMANDS)
def test_start_up_prints_no_library_noise(module):
  proc = run_python(['-m', module, *_FAILS_AFTER_IMPORTS[module]], _env())
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.splitlines()
  assert len(lines) == 1 and ': error: ' in lines[0], proc.stderr[-2000:]
  assert _MISSING in lines[0]


@pytest.mark.parametrize('module', COMMANDS + ['serving'])
def test_help_and_flag_mistakes_are_answered_before_the_imports(module):
  # The server's usage names it python -m serving, however it is started.
  prog = 'python -m ' + ('serving' if module == 'trainer.serve' else module)
  helped = run_python(['-X', 'importtime', '-m', module, '--help'], _env())
  assert helped.returncode == 0, helped.stderr[-2000:]
  assert helped.stdout.startswith(f'usage: {prog} '), helped.stdout[:300]
  imported = _imported(helped.stderr)
  assert 'argparse' in imported  # the log was read
  assert not imported & set(_HEAVY_MODULES)
  # Every command has a required flag (the schema command a subcommand).
  wrong = run_python(['-X', 'importtime', '-m', module], _env())
  assert wrong.returncode == 2
  usage_error = [l for l in wrong.stderr.splitlines() if prog in l]
  assert usage_error[-1].startswith(f'{prog}: error: '), wrong.stderr[-2000:]
  assert 'required' in usage_error[-1]
  assert not _imported(wrong.stderr) & set(_HEAVY_MODULES)


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


def _wait_for_library(proc: subprocess.Popen,
                      name: str,
                      timeout_s: float = 120) -> bool:
  """Until `proc` has loaded a shared library whose path holds `name`."""
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline and proc.poll() is None:
    try:
      with open(f'/proc/{proc.pid}/maps') as maps:
        if name in maps.read():
          return True
    except OSError:
      pass
    time.sleep(0.01)
  return False


@pytest.mark.skipif(
    not sys.platform.startswith('linux'), reason='reads /proc (Linux only)')
@pytest.mark.usefixtures('sigint_from_a_terminal')
@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize('module', COMMANDS)
def test_a_stop_while_a_command_imports_its_libraries_is_one_line(
    module, signum):
  """Ctrl-C or SIGTERM in the seconds a command spends importing TensorFlow
  (after its native library is loaded, with seconds of Python imports to
  go): one line and 128 + the signal (the server: 0, as for any stop before
  it serves), not a KeyboardInterrupt's traceback or a silent end."""
  proc = subprocess.Popen(
      [sys.executable, '-m', module, *_FAILS_AFTER_IMPORTS[module]],
      cwd=ROOT,
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True)
  try:
    assert _wait_for_library(proc, 'libtensorflow_framework'), (
        proc.communicate()[1][-2000:])
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.communicate()
  name = signal.Signals(signum).name
  assert proc.returncode == (0 if module == 'trainer.serve' else 128 +
                             signum), err[-2000:]
  assert err.splitlines() == [
      f'{_NAMES[module]}: stopped by {name} while starting; nothing done'
  ], err[-2000:]
  assert out == ''


def _stop_when(args, ready: Callable[[str], bool], signum: int,
               tmp_path) -> Tuple[int, str, str]:
  """Runs `python -m *args`, sends `signum` once `ready(stdout so far)`
  holds; returns its exit status, stdout and stderr. The command's
  temporary directory must be empty after it: nothing left there either
  (AutoGraph's generated modules, removed by an exit handler)."""
  out_path, err_path = tmp_path / 'stdout.txt', tmp_path / 'stderr.txt'
  temp = tmp_path / 'tmp'
  temp.mkdir()
  with open(out_path, 'w') as out, open(err_path, 'w') as err:
    proc = subprocess.Popen([sys.executable, '-m', *args],
                            cwd=ROOT,
                            env=dict(_env(), TMPDIR=str(temp)),
                            stdout=out,
                            stderr=err)
  code = signal_when(proc, lambda: ready(out_path.read_text()), signum,
                     lambda: err_path.read_text()[-3000:])
  assert os.listdir(temp) == []
  temp.rmdir()
  return code, out_path.read_text(), err_path.read_text()


@pytest.mark.usefixtures('sigint_from_a_terminal')
@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_the_trainer_trains_is_one_line(trainer_toy_preprocessed,
                                                     tmp_path, signum):
  """Not a KeyboardInterrupt's traceback through Keras and TensorFlow, nor a
  silent end: the line, 128 + the signal, and no export."""
  preprocess_dir, _ = trainer_toy_preprocessed
  model_dir = tmp_path / 'model'
  code, _, err = _stop_when([
      'trainer.task', '--preprocess-dir', preprocess_dir, '--model-dir',
      str(model_dir), '--epochs', '1000', '--early-stopping-patience', '1000',
      '--batch-size', '32', '--verbose', '2'
  ], lambda out: 'Epoch 3/' in out, signum, tmp_path)
  assert code == 128 + signum, err[-3000:]
  assert err == f'trainer: stopped by {signal.Signals(signum).name}\n'
  assert not (model_dir / 'export').exists()
  assert not (model_dir / 'metrics.json').exists()
  assert not (model_dir / '.lock').exists()  # another run may start


@pytest.mark.usefixtures('sigint_from_a_terminal')
@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_the_trainer_exports_leaves_no_partial_export(
    trainer_toy_preprocessed, tmp_path, signum):
  """The export is written under a staging name: a stop half-way removes it,
  and a version directory, if any, is whole."""
  preprocess_dir, _ = trainer_toy_preprocessed
  export_base = tmp_path / 'model' / 'export'
  code, _, err = _stop_when([
      'trainer.task', '--preprocess-dir', preprocess_dir, '--model-dir',
      str(tmp_path / 'model'), '--epochs', '2', '--verbose', '0'
  ], lambda _: bool(glob.glob(str(export_base / '.staging-*'))), signum,
                            tmp_path)
  assert code == 128 + signum, err[-3000:]
  assert err == f'trainer: stopped by {signal.Signals(signum).name}\n'
  left = os.listdir(export_base)
  assert not [name for name in left if name.startswith('.')], left
  for version in left:
    assert os.path.exists(ExportDir(str(export_base / version)).metadata_path)


@pytest.mark.usefixtures('sigint_from_a_terminal')
@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_predict_scores_leaves_no_predictions_file(
    trainer_toy_model, tmp_path, signum):
  """A predictions file that stops half-way would look like a complete one:
  it appears only when every row is scored."""
  model_dir, _ = trainer_toy_model
  rows = datagen.write_lines(
      str(tmp_path / 'rows.csv'),
      datagen.toy_rows(200_000, seed=4),
      header=datagen.TOY_HEADER)
  output = tmp_path / 'predictions.jsonl'

  def scoring(_):
    staged = glob.glob(f'{output}.tmp-*')
    return bool(staged) and os.path.getsize(staged[0]) > 0

  code, _, err = _stop_when([
      'trainer.predict', '--model-dir', model_dir, '--input', rows, '--output',
      str(output)
  ], scoring, signum, tmp_path)
  assert code == 128 + signum, err[-3000:]
  assert err == f'predict: stopped by {signal.Signals(signum).name}\n'
  assert sorted(
      os.listdir(tmp_path)) == ['rows.csv', 'stderr.txt', 'stdout.txt']
