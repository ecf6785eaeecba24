"""Fixtures of the runner and engine tests: one sample, one in-process run
that every other runner's output is compared with."""

import pytest

from tests.pipeline import runner_outputs


@pytest.fixture(scope='module')
def sample(tmp_path_factory):
  return runner_outputs.write_sample(tmp_path_factory.mktemp('runners_sample'))


@pytest.fixture(scope='module')
def reference(sample):
  out = str(sample['dir'] / 'in_process')
  return out, runner_outputs.run_preprocess(sample, out)
