"""scripts/get_data.py, what `make data` and the Adult tests run to obtain
the UCI files: they appear under their names only whole and verified."""

import os
import pathlib
import shutil
import subprocess
import sys

from tests.conftest import ROOT
from tests.conftest import run_python

_SCRIPT = str(ROOT / 'scripts' / 'get_data.py')
_NAMES = ('adult.data', 'adult.test')


def _get(dest, data_dir):
  return run_python([_SCRIPT, '--dest',
                     str(dest), '--data-dir',
                     str(data_dir)],
                    env=dict(os.environ),
                    timeout=60)


def test_copies_verified_files_then_finds_them(adult_dir, tmp_path):
  dest = tmp_path / 'census'
  proc = _get(dest, adult_dir)
  assert proc.returncode == 0, proc.stderr
  assert 'UCI Adult files ready' in proc.stdout
  assert sorted(os.listdir(dest)) == sorted(_NAMES)
  for name in _NAMES:
    assert (dest / name).read_bytes() == (pathlib.Path(adult_dir) /
                                          name).read_bytes()
  again = _get(dest, tmp_path / 'nowhere')
  assert again.returncode == 0, again.stderr
  assert 'already holds the UCI Adult files' in again.stdout


def test_a_wrong_file_is_refused_and_nothing_is_left(adult_dir, tmp_path):
  source = tmp_path / 'source'
  source.mkdir()
  shutil.copy(os.path.join(adult_dir, 'adult.data'), source / 'adult.data')
  # A truncated download: the last line cut.
  (source / 'adult.test').write_bytes(
      (pathlib.Path(adult_dir) / 'adult.test').read_bytes()[:-20])
  dest = tmp_path / 'census'
  proc = _get(dest, source)
  assert proc.returncode == 1, proc.stdout
  assert 'adult.test has md5' in proc.stderr
  # Neither file, not even the good one, nor the folder they were checked in.
  assert os.listdir(dest) == []


def test_a_killed_runs_folder_is_removed_a_live_ones_kept(adult_dir, tmp_path):
  dest = tmp_path / 'census'
  ended = subprocess.run(
      [sys.executable, '-c', 'import os; print(os.getpid())'],
      capture_output=True,
      text=True,
      check=True)
  killed = dest / f'.get_data-{int(ended.stdout)}-abc'
  live = dest / f'.get_data-{os.getpid()}-def'
  for folder in (killed, live):
    folder.mkdir(parents=True)
    (folder / 'adult.data').write_bytes(b'partial')
  proc = _get(dest, adult_dir)
  assert proc.returncode == 0, proc.stderr
  assert sorted(os.listdir(dest)) == sorted(_NAMES + (live.name,))
