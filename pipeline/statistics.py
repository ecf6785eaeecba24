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
import tensorflow_data_validation as tfdv


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
            | 'WriteStatistics' >> tfdv.WriteStatisticsToBinaryFile(self._path))
