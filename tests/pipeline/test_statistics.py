"""pipeline.statistics: TFDV's statistics of a dataset, written from the
stage that computes them, in the bytes TFDV's own writer writes."""

import os

import apache_beam as beam
import pyarrow as pa
import tensorflow_data_validation as tfdv

from pipeline import statistics
from pipeline import validation


def test_the_file_is_tfdvs_and_needs_no_file_sink(tmp_path):
  ours = str(tmp_path / 'ours.pb')
  tfdvs = str(tmp_path / 'tfdv.pb')
  batches = [
      pa.RecordBatch.from_pydict({
          'x': [[float(i)], [], [2.5]],
          's': [[b'a'], [b'b', b'c'], None],
      }) for i in range(3)
  ]
  with beam.Pipeline() as p:
    rows = p | beam.Create(batches)
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
