"""The job's temporary directory holds what libraries make, and goes."""

import os
import tempfile

import pytest

from pipeline import scratch


def test_temporary_files_go_to_the_job_directory_and_go_with_it():
  before = tempfile.gettempdir()
  with scratch.job_temp_dir('job-') as path:
    assert os.path.basename(path).startswith('job-')
    assert tempfile.gettempdir() == path
    # What Beam's portable runner does with its staged dependencies.
    left = tempfile.mkdtemp()
    with open(os.path.join(left, 'requirements.txt'), 'w') as f:
      f.write('x\n')
    assert os.path.dirname(left) == path
  assert not os.path.exists(path)
  assert tempfile.gettempdir() == before


def test_the_directory_goes_when_the_job_fails():
  with pytest.raises(RuntimeError, match='job failed'):
    with scratch.job_temp_dir('job-') as path:
      tempfile.mkdtemp()
      raise RuntimeError('job failed')
  assert not os.path.exists(path)


def test_removing_twice_is_fine(tmp_path):
  path = tmp_path / 'gone'
  path.mkdir()
  scratch.remove(str(path))
  scratch.remove(str(path))
  assert not path.exists()
