"""The output directory: one run writes it at a time, and only a finished run
is published."""

import os
import signal
import subprocess
import sys

import pytest

from core.dir_lock import DirectoryBusy
from core.errors import UserError
from pipeline.outputs import PublishConflict
from pipeline.outputs import StagedOutputDir
from tests.conftest import ROOT


def test_output_dir_that_appears_during_the_run_is_not_replaced(tmp_path):
  with StagedOutputDir(str(tmp_path / 'out')) as out:
    out.create()
    with open(out.path('manifest.json'), 'w') as f:
      f.write('{}')
    (tmp_path / 'out').mkdir()  # someone else published meanwhile
    with pytest.raises(PublishConflict) as e:
      out.publish()
  assert f'kept in {out.staging}' in str(e.value)
  assert os.path.exists(out.path('manifest.json'))
  assert os.listdir(tmp_path / 'out') == []


def test_a_second_run_stops_at_once_and_names_the_run_writing(tmp_path):
  """Even with --overwrite: the first run's staging directory is left as it
  is, and the second run may go once the first has ended."""
  final = str(tmp_path / 'out')
  first = StagedOutputDir(final, overwrite=True)
  first.create()
  with open(first.path('part'), 'w') as f:
    f.write('being written')
  with pytest.raises(DirectoryBusy) as e:
    StagedOutputDir(final, overwrite=True)
  message = str(e.value)
  assert message.startswith(f'--output-dir {final}: another run is writing it '
                            f'(pid {os.getpid()} on ')
  assert message.endswith('; wait for it to end or choose another directory '
                          f'(it holds {final}.lock)')
  assert open(first.path('part')).read() == 'being written'
  first.publish()
  first.release()
  assert sorted(os.listdir(tmp_path)) == ['out']
  with StagedOutputDir(final, overwrite=True) as second:
    assert os.path.exists(final + '.lock')
    assert open(os.path.join(final, 'part')).read() == 'being written'
  assert not os.path.exists(second.final + '.lock')


def test_a_refused_run_lets_go_of_the_lock(tmp_path):
  (tmp_path / 'out').mkdir()
  with pytest.raises(UserError, match='--overwrite'):
    StagedOutputDir(str(tmp_path / 'out'))
  assert sorted(os.listdir(tmp_path)) == ['out']
  StagedOutputDir(str(tmp_path / 'out'), overwrite=True).release()


# A run that takes the lock, starts writing, and is killed.
_KILLED_RUN = """
import os, signal, sys
from pipeline.outputs import StagedOutputDir
StagedOutputDir(sys.argv[1]).create()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_lock_of_a_killed_run_is_taken_by_the_next(tmp_path):
  """A run killed outright (SIGKILL, the machine's OOM killer) leaves its
  lock file and its staging directory; the next run takes both over."""
  final = str(tmp_path / 'out')
  child = subprocess.run([sys.executable, '-c', _KILLED_RUN, final],
                         cwd=ROOT,
                         capture_output=True,
                         text=True,
                         timeout=120)
  assert child.returncode == -signal.SIGKILL, child.stderr
  assert sorted(os.listdir(tmp_path)) == ['out.lock', 'out.tmp']
  with pytest.raises(UserError) as e:
    StagedOutputDir(final)
  assert str(e.value) == (f'--output-dir {final}: {final}.tmp exists, left by '
                          'a run that crashed; pass --overwrite to discard it')
  with StagedOutputDir(final, overwrite=True):
    assert sorted(os.listdir(tmp_path)) == ['out.lock']
  assert os.listdir(tmp_path) == []


def test_a_relative_output_dir_is_named_as_a_worker_elsewhere_finds_it(
    tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with StagedOutputDir('out/pre/', overwrite=True) as out:
    assert out.final == str(tmp_path / 'out' / 'pre')
    assert out.staging == str(tmp_path / 'out' / 'pre.tmp')
    assert out.path('data') == str(tmp_path / 'out' / 'pre.tmp' / 'data')
