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


# ------------------------------------------------------------ trainer fixtures

TRAINER_TOY_ROWS = 1500
TRAINER_TOY_TEST_ROWS = 400


@pytest.fixture(scope='session')
def trainer_toy_preprocessed(tmp_path_factory):
  """Preprocess output of generated toy rows: train/eval, test and raw/."""
  from pipeline import preprocess
  from tests import datagen
  d = tmp_path_factory.mktemp('trainer_toy')
  train = datagen.write_lines(
      str(d / 'toy.csv'), datagen.toy_rows(TRAINER_TOY_ROWS, seed=11),
      header=datagen.TOY_HEADER)
  test = datagen.write_lines(
      str(d / 'toy_test.csv'),
      datagen.toy_rows(TRAINER_TOY_TEST_ROWS, seed=12),
      header=datagen.TOY_HEADER)
  out = str(d / 'preprocess')
  manifest = preprocess.run([
      '--config', TOY_CONFIG, '--input', train, '--test-input', test,
      '--output-dir', out, '--write-raw', '--num-shards', '2'])
  return out, manifest


@pytest.fixture(scope='session')
def trainer_toy_model(trainer_toy_preprocessed, tmp_path_factory):
  """A wide & deep model trained briefly on the toy data, with its export.

  Returns (model_dir, metrics document).
  """
  from trainer import task
  preprocess_dir, _ = trainer_toy_preprocessed
  model_dir = str(tmp_path_factory.mktemp('trainer_toy_model') / 'model')
  doc = task.run([
      '--preprocess-dir', preprocess_dir, '--model-dir', model_dir,
      '--epochs', '15', '--batch-size', '64', '--early-stopping-patience', '4',
      '--verbose', '0', '--seed', '3'])
  return model_dir, doc
