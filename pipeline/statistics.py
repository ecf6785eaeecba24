"""TFDV statistics of one dataset, as both sides of every comparison compute
them: each split of the preprocess job, and the serving rows of the skew
check. One transform with one set of options, so that drift and skew compare
like with like (the same histograms and sketches).

One per split, where the split is produced: the statistics of all splits in
one sliced TFDV computation would need the splits' batches flattened into
one collection, which the runner holds in memory whole (at 1M rows peak RSS
went from 1.1 to 2.0 GB).
"""

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import statistics_pb2

# What tfdv.WriteStatisticsToBinaryFile writes: the list's bytes alone.
_CODER = beam.coders.ProtoCoder(statistics_pb2.DatasetFeatureStatisticsList)


def write_statistics(statistics: statistics_pb2.DatasetFeatureStatisticsList,
                     path: str) -> None:
  """The file tfdv.WriteStatisticsToBinaryFile writes, byte for byte, from
  the stage that computes the statistics: TFDV's writer is Beam's file sink
  (beam.io.WriteToText of the one element), four more stages per split."""
  with FileSystems.create(path) as f:
    f.write(_CODER.encode(statistics))


class ComputeStatistics(beam.PTransform):
  """Record batches -> TFDV statistics written to `path` (TFDV's default
  StatsOptions)."""

  def __init__(self, path: str):
    super().__init__()
    self._path = path

  def expand(self, batches):
    return (batches
            |
            'GenerateStatistics' >> tfdv.GenerateStatistics(tfdv.StatsOptions())
            | 'WriteStatistics' >> beam.Map(write_statistics, self._path))
