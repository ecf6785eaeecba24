"""Split statistics: computed together, each file what TFDV writes for its split
alone."""

import os

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
import pyarrow as pa
import pytest
import tensorflow_data_validation as tfdv

from core.config import load_config
from pipeline import cleanse
from pipeline import statistics
from pipeline.sources import RawChunk
from tests import datagen
from tests.conftest import TOY_CONFIG


@pytest.fixture(scope='module')
def toy():
  return load_config(TOY_CONFIG)


def _batches(config, lines, chunk):
  parser = cleanse.RowParser(config)
  out = []
  for start in range(0, len(lines), chunk):
    batch, _, _ = parser.parse_chunk(
        RawChunk('x.csv', start + 2, 'csv',
                 [l.encode() for l in lines[start:start + chunk]]))
    out.append(batch)
  return out


def _alone(batches, path):
  """What tfdv.GenerateStatistics + WriteStatisticsToBinaryFile write."""
  with TestPipeline() as p:
    _ = (
        p
        | beam.Create(batches, reshuffle=False).with_output_types(
            pa.RecordBatch)
        | tfdv.GenerateStatistics(statistics.statistics_options())
        | tfdv.WriteStatisticsToBinaryFile(path))
  with open(path, 'rb') as f:
    return f.read()


def test_each_split_file_is_what_tfdv_writes_for_the_split_alone(toy, tmp_path):
  splits = {
      'train': _batches(toy, datagen.toy_rows(900, seed=1), chunk=200),
      'eval': _batches(toy, datagen.toy_rows(300, seed=2), chunk=120),
      'test': [],  # a split without rows gets an empty dataset, as alone
  }
  paths = {name: str(tmp_path / 'stats' / f'{name}.pb') for name in splits}
  with TestPipeline() as p:
    pcolls = {
        name:
            p | f'Create[{name}]' >> beam.Create(
                batches, reshuffle=False).with_output_types(pa.RecordBatch)
        for name, batches in splits.items()
    }
    written = pcolls | statistics.ComputeStatistics(paths)
    assert_that(written, equal_to(list(splits)))

  for name, batches in splits.items():
    with open(paths[name], 'rb') as f:
      together = f.read()
    alone = _alone(batches, str(tmp_path / f"{name}-alone.pb"))
    assert together == alone, name
    stats = tfdv.load_stats_binary(paths[name])
    assert len(stats.datasets) == 1 and stats.datasets[0].name == ''
    assert stats.datasets[0].num_examples == sum(b.num_rows for b in batches)
  assert os.path.getsize(paths['test']) > 0
