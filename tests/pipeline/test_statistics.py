"""pipeline.statistics: TFDV's statistics of a dataset, written from the
stage that computes them, in the bytes TFDV's own writer writes, with fewer
stages than TFDV's own transform."""

import os
import random

import apache_beam as beam
import pyarrow as pa
import pytest
import tensorflow_data_validation as tfdv

from pipeline import statistics
from pipeline import validation


def _small_batches():
  return [
      pa.RecordBatch.from_pydict({
          'x': [[float(i)], [], [2.5]],
          's': [[b'a'], [b'b', b'c'], None],
      }) for i in range(3)
  ]


def _mixed_batches():
  """Numbers, integers, strings with a long tail, missing values, many
    batches: every part TFDV's default generators compute."""
  rng = random.Random(7)
  words = [f'w{i}'.encode() for i in range(300)]
  batches = []
  for _ in range(40):
    n = rng.randint(1, 60)
    batches.append(
        pa.RecordBatch.from_pydict({
            'f': [[rng.gauss(3, 2)] if rng.random() > 0.1 else None
                  for _ in range(n)],
            'i': [[rng.randint(-5, 90)
                   for _ in range(rng.randint(0, 3))]
                  for _ in range(n)],
            's': [[rng.choice(words[:rng.randint(1, 300)])]
                  if rng.random() > 0.05 else [] for _ in range(n)],
        }))
  return batches


def _files_of_both(tmp_path, batches, **ours):
  """Our file and TFDV's for `batches`, and the primitive transforms each
    adds to the pipeline."""
  paths = {'ours': str(tmp_path / 'ours.pb'), 'tfdv': str(tmp_path / 'tfdv.pb')}
  with beam.Pipeline() as p:
    rows = p | beam.Create(batches, reshuffle=False)
    _ = rows | 'Ours' >> statistics.ComputeStatistics(paths['ours'], **ours)
    _ = (
        rows
        | 'TFDV' >> tfdv.GenerateStatistics(tfdv.StatsOptions())
        | tfdv.WriteStatisticsToBinaryFile(paths['tfdv']))
    transforms = p.to_runner_api().components.transforms.values()
  primitives = {
      side: [
          t.unique_name
          for t in transforms
          if not t.subtransforms and t.unique_name.startswith(prefix)
      ] for side, prefix in (('ours', 'Ours/'), ('tfdv', 'TFDV/'))
  }
  contents = {}
  for side, path in paths.items():
    with open(path, 'rb') as f:
      contents[side] = f.read()
  return contents, primitives


def test_the_file_is_tfdvs_and_needs_no_file_sink(tmp_path):
  ours = str(tmp_path / 'ours.pb')
  tfdvs = str(tmp_path / 'tfdv.pb')
  with beam.Pipeline() as p:
    rows = p | beam.Create(_small_batches())
    _ = rows | 'Ours' >> statistics.ComputeStatistics(ours)
    _ = (
        rows
        | tfdv.GenerateStatistics(tfdv.StatsOptions())
        | tfdv.WriteStatisticsToBinaryFile(tfdvs))
    names = [
        t.unique_name for t in p.to_runner_api().components.transforms.values()
    ]
  with open(ours, 'rb') as a, open(tfdvs, 'rb') as b:
    assert a.read() == b.read()
  dataset = validation.dataset(validation.load_statistics(ours))
  assert dataset.num_examples == 9
  assert {'.'.join(f.path.step) for f in dataset.features} == {'x', 's'}
  assert [n for n in names if n.startswith('WriteStatisticsToBinaryFile/')]
  assert not [n for n in names if n.startswith('Ours/') and 'Write/' in n]
  # Nothing left beside the two files (no temporary directory of a sink).
  assert sorted(os.listdir(tmp_path)) == ['ours.pb', 'tfdv.pb']


@pytest.mark.parametrize('fanout', [None, statistics.HOT_KEY_FANOUT])
def test_the_statistics_are_tfdvs_with_a_fraction_of_its_transforms(
    tmp_path, fanout):
  contents, primitives = _files_of_both(
      tmp_path, _mixed_batches(), hot_key_fanout=fanout)
  assert contents['ours'] == contents['tfdv']
  dataset = validation.dataset(
      validation.load_statistics(str(tmp_path / 'ours.pb')))
  by_name = {'.'.join(f.path.step): f for f in dataset.features}
  assert set(by_name) == {'f', 'i', 's'}
  assert by_name['s'].string_stats.unique > 100  # the top-k generator's
  assert by_name['f'].num_stats.histograms  # the combiner's
  # Every primitive transform is one more thing pickled, put in the proto
  # and set up in some fused stage.
  assert len(primitives['ours']) * 2 <= len(primitives['tfdv']), primitives


def test_an_empty_dataset_gets_tfdvs_placeholder(tmp_path):
  contents, _ = _files_of_both(tmp_path, [])
  assert contents['ours'] == contents['tfdv']
  statistics_list = validation.load_statistics(str(tmp_path / 'ours.pb'))
  assert len(statistics_list.datasets) == 1
  assert not statistics_list.datasets[0].features
