"""Shared fixtures: the real UCI Adult files and preprocess runs on them.

Expensive fixtures are session-scoped so a whole `make test` runs the real
Adult preprocess once.
"""

import os
import pathlib

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

ROOT = pathlib.Path(__file__).resolve().parent.parent
CENSUS_CONFIG = str(ROOT / 'schemas' / 'census.yaml')
TOY_CONFIG = str(ROOT / 'tests' / 'data' / 'toy.yaml')

# Where the original UCI files may be: an explicit directory, the shared data
# folder beside the checkout, or what `make run` downloaded.
_ADULT_CANDIDATES = [
    os.environ.get('ADULT_DATA_DIR', ''),
    str(ROOT.parent / 'shared' / 'data' / 'census'),
    str(ROOT / 'data' / 'census'),
]


def find_adult_dir():
  for d in _ADULT_CANDIDATES:
    if d and os.path.exists(os.path.join(d, 'adult.data')) and os.path.exists(
        os.path.join(d, 'adult.test')):
      return d
  return None


@pytest.fixture(scope='session')
def adult_dir():
  d = find_adult_dir()
  if d is None:
    pytest.skip('UCI Adult files not found (set ADULT_DATA_DIR or run '
                '`make data`)')
  return d


@pytest.fixture(scope='session')
def adult_preprocessed(adult_dir, tmp_path_factory):
  """One preprocess run over the real adult.data + adult.test, raw/ included."""
  from pipeline import preprocess
  out = str(tmp_path_factory.mktemp('adult') / 'preprocess')
  manifest = preprocess.run([
      '--config', CENSUS_CONFIG,
      '--input', os.path.join(adult_dir, 'adult.data'),
      '--test-input', os.path.join(adult_dir, 'adult.test'),
      '--output-dir', out, '--write-raw'])
  return out, manifest
