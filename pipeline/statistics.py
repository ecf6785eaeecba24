"""TFDV statistics of every split, computed together, written one file each.

`tfdv.GenerateStatistics` describes one dataset. Applied once per split it
puts a copy of TFDV's whole expansion (the statistics generators, their
combines with hot-key fan-out, the merge, the file write: some twenty stages)
into the job for each split, and on small data the runner's fixed cost per
stage is most of what statistics cost. TFDV's own sliced implementation
(`GenerateSlicedStatisticsImpl`, what `GenerateStatistics` runs with every
row in one unnamed slice) computes the statistics of each slice key in one set
of stages; here the key is the split. Each split's statistics are then
written as `tfdv.GenerateStatistics` + `tfdv.WriteStatisticsToBinaryFile`
write them: the same generators with the same default options, one unnamed
dataset per file, an empty dataset for a split without rows.
"""

from typing import Dict

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_metadata.proto.v0 import statistics_pb2


def statistics_options() -> tfdv.StatsOptions:
  """The options every split's statistics and the serving statistics use,
  so that drift and skew compare like with like."""
  return tfdv.StatsOptions()


class _WriteSplitStatisticsFn(beam.DoFn):
  """The statistics of all splits -> one binary statistics file per split."""

  def __init__(self, paths: Dict[str, str]):
    self._paths = paths

  def process(self, stats: statistics_pb2.DatasetFeatureStatisticsList):
    by_split = {d.name: d for d in stats.datasets}
    for name, path in self._paths.items():
      dataset = statistics_pb2.DatasetFeatureStatistics()
      if name in by_split:
        dataset.CopyFrom(by_split[name])
      dataset.ClearField('name')  # the split is the file, as unsliced
      one = statistics_pb2.DatasetFeatureStatisticsList(datasets=[dataset])
      with FileSystems.create(path) as f:
        f.write(one.SerializeToString(deterministic=True))
      yield name


class ComputeStatistics(beam.PTransform):
  """{split: record batches} -> TFDV statistics of each split, written to
  `paths[split]`; outputs the names of the splits written."""

  def __init__(self, paths: Dict[str, str]):
    super().__init__()
    self._paths = dict(paths)

  def expand(self, splits):
    keyed = [
        splits[name] | f'Key[{name}]' >> beam.Map(lambda b, n=name: (n, b))
        for name in self._paths
    ]
    # Default options give one result partition: one list of all splits.
    return (
        keyed
        | 'MergeSplits' >> beam.Flatten()
        | 'GenerateStatistics' >> stats_impl.GenerateSlicedStatisticsImpl(
            statistics_options(), is_slicing_enabled=True)
        | 'WriteStatistics' >> beam.ParDo(_WriteSplitStatisticsFn(self._paths)))
