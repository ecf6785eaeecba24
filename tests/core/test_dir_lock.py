"""The directory lock: one holder at a time, named in the refusal, and
nothing left behind once released."""

import os

import pytest

from core.dir_lock import DirectoryBusy
from core.dir_lock import DirLock
from core.dir_lock import lock_file


def test_a_held_lock_refuses_the_next_run_and_names_its_holder(tmp_path):
  path = str(tmp_path / 'out.lock')
  with DirLock(path, '--output-dir out'):
    with pytest.raises(DirectoryBusy) as e:
      DirLock(path, '--output-dir out')
    assert str(e.value).startswith('--output-dir out: another run is writing '
                                   f'it (pid {os.getpid()} on ')
    assert str(e.value).endswith('wait for it to end or choose another '
                                 f'directory (it holds {path})')
  assert os.listdir(tmp_path) == []
  DirLock(path, '--output-dir out').release()


def test_a_remote_directory_is_locked_on_this_machine(tmp_path, monkeypatch):
  monkeypatch.setattr('tempfile.tempdir', str(tmp_path))
  path = lock_file('gs://bucket/models/m/.lock')
  assert os.path.dirname(path) == str(tmp_path)
  assert path == lock_file('gs://bucket/models/m/.lock')
  assert path != lock_file('gs://bucket/models/n/.lock')
  assert lock_file('/data/out.lock') == '/data/out.lock'
  assert lock_file('file:///data/out.lock') == '/data/out.lock'
  with DirLock('gs://bucket/models/m/.lock',
               '--model-dir gs://bucket/models/m'):
    with pytest.raises(DirectoryBusy, match='gs://bucket/models/m: another'):
      DirLock('gs://bucket/models/m/.lock', '--model-dir gs://bucket/models/m')
    DirLock('gs://bucket/models/n/.lock', '--model-dir n').release()
  assert os.listdir(tmp_path) == []
