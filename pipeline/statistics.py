"""TFDV statistics of one dataset, as both sides of every comparison compute
them: each split of the preprocess job, and the serving rows of the skew
check. One transform with one set of options, so that drift and skew compare
like with like (the same histograms and sketches).

One per split, where the split is produced: the statistics of all splits in
one sliced TFDV computation would need the splits' batches flattened into
one collection, which the runner holds in memory whole (at 1M rows peak RSS
went from 1.1 to 2.0 GB).

The statistics are TFDV's, computed by TFDV's own generators and merged by
its own merge, and the file is byte for byte what `tfdv.GenerateStatistics`
and `tfdv.WriteStatisticsToBinaryFile` give. What is left out is the
wrapping around them that an unsliced dataset does not need, and which costs
every split a dozen more fused stages (each set up, pickled and run): the
telemetry counters (which generators ran, how many distinct slice keys, the
input's bytes), the empty-input placeholder computed with its own count, the
flattens, and the merge run as a keyed combine. Here the generators' partial
statistics are merged once, in one stage that runs exactly once: with no
input it merges TFDV's placeholder, as TFDV does.
"""

import math
from typing import List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx_bsl.statistics import merge_util

# What tfdv.WriteStatisticsToBinaryFile writes: the list's bytes alone.
_CODER = beam.coders.ProtoCoder(statistics_pb2.DatasetFeatureStatisticsList)

# TFDV's fan-out of its one combiner's hot key (max(128, 20 * ceil(sqrt(n)))
# for n combine functions): for runners whose workers each send partial
# accumulators of that single key; one process has nothing to spread.
HOT_KEY_FANOUT = max(128, 20 * int(math.ceil(math.sqrt(1))))


def write_statistics(statistics: statistics_pb2.DatasetFeatureStatisticsList,
                     path: str) -> None:
  """The file tfdv.WriteStatisticsToBinaryFile writes, byte for byte, from
  the stage that computes the statistics: TFDV's writer is Beam's file sink
  (beam.io.WriteToText of the one element), four more stages per split."""
  with FileSystems.create(path) as f:
    f.write(_CODER.encode(statistics))


def _key_with_void(batch):
  # TFDV's key for an unsliced dataset's batches.
  return None, batch


def _merged(
    _, *partials: List[tuple]) -> statistics_pb2.DatasetFeatureStatisticsList:
  """The generators' (slice key, statistics) parts merged as TFDV merges
    them. The merge keeps features in the order it first sees them: the
    combiners' parts come first, as they reach TFDV's own merge when the
    runner runs its stages in one process."""
  parts = [part for generated in partials for _, part in generated]
  if not parts:
    # TFDV's placeholder for a dataset without rows.
    parts = [statistics_pb2.DatasetFeatureStatistics()]
  return merge_util.merge_dataset_feature_statistics(parts)


def _written(statistics: statistics_pb2.DatasetFeatureStatisticsList,
             path: str) -> statistics_pb2.DatasetFeatureStatisticsList:
  write_statistics(statistics, path)
  return statistics


class ComputeStatistics(beam.PTransform):
  """Record batches -> TFDV statistics written to `path` (TFDV's default
  StatsOptions); the output is the written statistics.

    hot_key_fanout: spread the combiner's single key over this many
      intermediate keys (`HOT_KEY_FANOUT` is TFDV's), for runners with many
      workers; None merges it directly.
  """

  def __init__(self, path: str, hot_key_fanout: Optional[int] = None):
    super().__init__()
    self._path = path
    self._hot_key_fanout = hot_key_fanout

  def expand(self, batches):
    options = tfdv.StatsOptions()
    transform_generators, combiners, _ = stats_impl._split_generator_types(  # pylint: disable=protected-access
        stats_impl.get_generators(options),
        num_partitions=1)
    keyed = batches | 'KeyWithVoid' >> beam.Map(_key_with_void)
    combine = beam.CombinePerKey(
        stats_impl._CombinerStatsGeneratorsCombineFn(  # pylint: disable=protected-access
            combiners, options.desired_batch_size))
    if self._hot_key_fanout:
      combine = combine.with_hot_key_fanout(self._hot_key_fanout)
    partials = [keyed | 'RunCombinerStatsGenerators' >> combine] + [
        keyed | generator.name >> generator.ptransform
        for generator in transform_generators
    ]
    return (
        batches.pipeline
        | 'Once' >> beam.Impulse()
        |
        'Merge' >> beam.Map(_merged, *[beam.pvalue.AsList(p) for p in partials])
        | 'WriteStatistics' >> beam.Map(_written, self._path))
