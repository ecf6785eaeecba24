"""Split stage: deterministic train / eval (/ test) assignment.

Each row gets a position u in [0, 1) from a keyed hash of its values and the
configured seed: never a random draw, so the same data always splits the same
way and duplicate rows always land together (no leakage between splits).

Without stratification a row's split depends on u alone. With stratification
the cut points are chosen per label: u is binned into a fine histogram per
label (one small full pass), and each label's cut is placed where its own
cumulative count reaches the configured ratio. Every split then has the label
rate of the whole input, to within a bin's worth of rows, instead of whatever
the hash happens to give a small minority class.
"""

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.config import DatasetConfig
from core.hashing import row_positions

HISTOGRAM_BINS = 1 << 14


def split_names(config: DatasetConfig, has_test_input: bool) -> List[str]:
  """Splits drawn from --input, in order: train, eval, and test if configured."""
  names = [
      n for n in ('train', 'eval', 'test') if config.split.ratios.get(n, 0) > 0
  ]
  if has_test_input and 'test' in names:
    names.remove('test')
  return names


def _label_groups(batch: pa.RecordBatch,
                  label: str) -> List[Tuple[Optional[bytes], np.ndarray]]:
  """(label value, boolean row mask) for each label value in the batch.

  The value is None for rows without a label (only ever in unlabeled data).
  """
  column = batch.column(label)
  values = column.flatten()
  if column.null_count == 0 and len(values) == len(column):
    # Exactly one label per row: group with a dictionary encoding.
    encoded = pc.dictionary_encode(values)
    codes = encoded.indices.to_numpy()
    return [(value, codes == code)
            for code, value in enumerate(encoded.dictionary.to_pylist())]
  labels = [v[0] if v else None for v in column.to_pylist()]
  return [(value, np.array([v == value
                            for v in labels], dtype=bool))
          for value in dict.fromkeys(labels)]


def _with_column(batch: pa.RecordBatch, name: str,
                 column: pa.Array) -> pa.RecordBatch:
  return pa.RecordBatch.from_arrays(
      batch.columns + [column],
      schema=batch.schema.append(pa.field(name, column.type)))


def _without_column(batch: pa.RecordBatch, index: int) -> pa.RecordBatch:
  return pa.RecordBatch.from_arrays(
      batch.columns[:index] + batch.columns[index + 1:],
      schema=batch.schema.remove(index))


# Each row's bin of hash positions, a column of its own from where the rows
# are read to where they are assigned. Hashing every value of every row is
# most of what the split costs, and the label histograms need every row's bin
# before the first row can be assigned: carried, the bins are hashed once
# (0.6-1.0 s less of a million-row job) and cost about 2 bytes a row between
# the stages. Not a valid column name, so never one of the data's.
_BIN_COLUMN = '#split-bin'


def with_hash_bins(batch: pa.RecordBatch, seed: int,
                   skip: Sequence[str]) -> pa.RecordBatch:
  """The batch with each row's bin of its hash position (0 ..
  HISTOGRAM_BINS - 1) in a column of its own."""
  bins = np.minimum(
      (row_positions(batch, seed, skip) * HISTOGRAM_BINS).astype(np.int64),
      HISTOGRAM_BINS - 1)
  return _with_column(batch, _BIN_COLUMN, pa.array(bins.astype(np.uint16)))


class _LabelHistograms(beam.CombineFn):
  """Per-label histogram of hash positions, over HISTOGRAM_BINS bins, of
  batches that carry their bins (with_hash_bins)."""

  def __init__(self, label: str):
    self._label = label

  def create_accumulator(self):
    return {}

  def add_input(self, acc, batch: pa.RecordBatch):
    bins = batch.column(_BIN_COLUMN).to_numpy()
    for value, mask in _label_groups(batch, self._label):
      counts = np.bincount(bins[mask], minlength=HISTOGRAM_BINS)
      if value in acc:
        acc[value] += counts
      else:
        acc[value] = counts
    return acc

  def merge_accumulators(self, accs):
    merged: Dict[Optional[bytes], np.ndarray] = {}
    for acc in accs:
      for value, counts in acc.items():
        if value in merged:
          merged[value] = merged[value] + counts
        else:
          merged[value] = counts.copy()
    return merged

  def extract_output(self, acc):
    return acc


def cut_points(ratios: Sequence[float],
               histogram: Optional[np.ndarray] = None) -> List[float]:
  """Upper cut positions in [0, 1] for each split but the last.

  Without a histogram the cuts are the cumulative ratios. With one, each cut is
  the bin edge where the cumulative count first reaches its share of rows.
  """
  cumulative = np.cumsum(ratios)[:-1]
  if histogram is None or histogram.sum() == 0:
    return cumulative.tolist()
  counts = np.cumsum(histogram)
  total = counts[-1]
  cuts = []
  for fraction in cumulative:
    target = fraction * total
    # First bin whose cumulative count reaches the target; cut at its upper
    # edge when that lands closer to the target than its lower edge.
    idx = int(np.searchsorted(counts, target, side='left'))
    below = counts[idx - 1] if idx > 0 else 0
    edge = idx + 1 if counts[idx] - target <= target - below else idx
    cuts.append(edge / HISTOGRAM_BINS)
  return cuts


class _AssignSplitFn(beam.DoFn):

  def __init__(self, config: DatasetConfig, names: Sequence[str]):
    self._label = config.label.column
    self._seed = config.split.seed
    self._skip = tuple(c.name for c in config.derived_columns)
    self._names = list(names)
    ratios = [config.split.ratios[n] for n in names]
    total = sum(ratios)
    self._ratios = [r / total for r in ratios]
    self._counters = {n: Metrics.counter('split', f'rows_{n}') for n in names}

  def process(self,
              batch: pa.RecordBatch,
              histograms: Optional[Mapping[Optional[bytes],
                                           np.ndarray]] = None):
    split_index = np.empty(batch.num_rows, dtype=np.int64)
    if histograms is None:
      positions = row_positions(batch, self._seed, self._skip)
      split_index[:] = np.searchsorted(
          cut_points(self._ratios), positions, side='right')
    else:
      column = batch.schema.get_field_index(_BIN_COLUMN)
      bins = batch.column(column).to_numpy() / HISTOGRAM_BINS
      batch = _without_column(batch, column)
      for value, mask in _label_groups(batch, self._label):
        cuts = cut_points(self._ratios, histograms.get(value))
        split_index[mask] = np.searchsorted(cuts, bins[mask], side='right')
    for i, name in enumerate(self._names):
      mask = split_index == i
      n = int(mask.sum())
      if n:
        self._counters[name].inc(n)
        yield beam.pvalue.TaggedOutput(name, batch.filter(pa.array(mask)))


class SplitDataset(beam.PTransform):
  """Record batches -> one PCollection of record batches per split name."""

  def __init__(self, config: DatasetConfig, names: Sequence[str]):
    super().__init__()
    self._config = config
    self._names = list(names)

  def expand(self, batches):
    side = []
    if self._config.split.stratify and len(self._names) > 1:
      batches = batches | 'HashBins' >> beam.Map(
          with_hash_bins, self._config.split.seed,
          tuple(c.name
                for c in self._config.derived_columns)).with_output_types(
                    pa.RecordBatch)
      histograms = (
          batches
          | 'LabelHistograms' >> beam.CombineGlobally(
              _LabelHistograms(self._config.label.column)))
      side = [beam.pvalue.AsSingleton(histograms)]
    outputs = batches | 'AssignSplit' >> beam.ParDo(
        _AssignSplitFn(self._config, self._names), *
        side).with_outputs(*self._names)
    splits = {name: outputs[name] for name in self._names}
    for pcoll in splits.values():
      # Tagged outputs are untyped; typed, they travel with the compact
      # record batch coder (cleanse.RecordBatchCoder).
      pcoll.element_type = pa.RecordBatch
    return splits


class SummarizeSplit(beam.PTransform):
  """Record batches of one split -> {'rows': n, 'positive': k} per batch, to
  be added up with cleanse.SumCounts (the job sums all of its counts in one
  combine).

  `positive` counts the positive class of a binary label; other tasks have
  none, and count 0.
  """

  def __init__(self, config: DatasetConfig):
    super().__init__()
    self._label = config.label.column
    self._positive = (
        config.label.positive.encode('utf-8')
        if config.label.positive is not None else None)

  def expand(self, batches):
    label, positive = self._label, self._positive

    def summarize(batch):
      if positive is None:
        return {'rows': batch.num_rows, 'positive': 0}
      positives = sum(
          int(mask.sum())
          for value, mask in _label_groups(batch, label)
          if value == positive)
      return {'rows': batch.num_rows, 'positive': positives}

    return batches | 'RowsAndPositives' >> beam.Map(summarize)


# A column added to every batch for the transform only, so that all splits go
# through one TransformDataset (one transform graph loaded, one set of stages)
# and come out again by split. tf.Transform passes it through untouched.
SPLIT_COLUMN = '__split__'


def with_split_column(batch: pa.RecordBatch, index: int) -> pa.RecordBatch:
  column = pa.LargeListArray.from_arrays(
      pa.array(np.arange(batch.num_rows + 1, dtype=np.int64)),
      pa.array(np.full(batch.num_rows, index, dtype=np.int64)))
  return _with_column(batch, SPLIT_COLUMN, column)


class RouteBySplitFn(beam.DoFn):
  """Transformed (batch, passthrough) pairs -> batches tagged by split."""

  def __init__(self, names: Sequence[str]):
    self._names = list(names)

  def process(self, element):
    batch = element[0] if isinstance(element, tuple) else element
    column = batch.schema.get_field_index(SPLIT_COLUMN)
    index = batch.column(column).flatten()[0].as_py()
    yield beam.pvalue.TaggedOutput(self._names[index],
                                   _without_column(batch, column))
