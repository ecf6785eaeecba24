"""Fixtures of the runner and engine tests: one sample, one in-process run
that every other runner's output is compared with, each built once per test
run however many test processes share it."""

import pytest

from tests.conftest import once_per_run
from tests.pipeline import runner_outputs


@pytest.fixture(scope='session')
def sample(tmp_path_factory):
  return once_per_run(tmp_path_factory, 'runners_sample',
                      runner_outputs.write_sample)


@pytest.fixture(scope='session')
def reference(sample, tmp_path_factory):

  def build(folder):
    out = str(folder / 'in_process')
    return out, runner_outputs.run_preprocess(sample, out)

  return tuple(once_per_run(tmp_path_factory, 'runners_reference', build))
