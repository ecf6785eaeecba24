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

import hashlib
from typing import List, Mapping, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from pipeline.cleanse import SumCounts
from pipeline.config import DatasetConfig

HISTOGRAM_BINS = 1 << 14
_VALUE_SEPARATOR = '\x1f'


def split_names(config: DatasetConfig, has_test_input: bool) -> List[str]:
  """Splits drawn from --input, in order: train, eval, and test if configured."""
  names = [n for n in ('train', 'eval', 'test')
           if config.split.ratios.get(n, 0) > 0]
  if has_test_input and 'test' in names:
    names.remove('test')
  return names


def row_positions(batch: pa.RecordBatch, seed: int) -> np.ndarray:
  """Hash position in [0, 1) of each row, from its values and the seed."""
  columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
  key = seed.to_bytes(8, 'little', signed=False)
  out = np.empty(batch.num_rows, dtype=np.float64)
  for i, row in enumerate(zip(*columns)):
    text = _VALUE_SEPARATOR.join(repr(v) for v in row)
    digest = hashlib.blake2b(text.encode('utf-8'), digest_size=8,
                             key=key).digest()
    out[i] = int.from_bytes(digest, 'little') / 2.0**64
  return out


def _labels(batch: pa.RecordBatch, label: str) -> List[bytes]:
  return [v[0] for v in batch.column(label).to_pylist()]


class _LabelHistograms(beam.CombineFn):
  """Per-label histogram of hash positions, over HISTOGRAM_BINS bins."""

  def __init__(self, label: str, seed: int):
    self._label = label
    self._seed = seed

  def create_accumulator(self):
    return {}

  def add_input(self, acc, batch: pa.RecordBatch):
    bins = np.minimum((row_positions(batch, self._seed) * HISTOGRAM_BINS
                      ).astype(np.int64), HISTOGRAM_BINS - 1)
    labels = np.array(_labels(batch, self._label), dtype=object)
    for value in set(labels.tolist()):
      counts = np.bincount(bins[labels == value], minlength=HISTOGRAM_BINS)
      if value in acc:
        acc[value] += counts
      else:
        acc[value] = counts
    return acc

  def merge_accumulators(self, accs):
    merged = {}
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
    self._names = list(names)
    ratios = [config.split.ratios[n] for n in names]
    total = sum(ratios)
    self._ratios = [r / total for r in ratios]
    self._counters = {n: Metrics.counter('split', f'rows_{n}') for n in names}

  def process(self, batch: pa.RecordBatch,
              histograms: Optional[Mapping[bytes, np.ndarray]] = None):
    positions = row_positions(batch, self._seed)
    split_index = np.empty(batch.num_rows, dtype=np.int64)
    if histograms is None:
      split_index[:] = np.searchsorted(cut_points(self._ratios), positions,
                                       side='right')
    else:
      labels = np.array(_labels(batch, self._label), dtype=object)
      bins = np.minimum((positions * HISTOGRAM_BINS).astype(np.int64),
                        HISTOGRAM_BINS - 1) / HISTOGRAM_BINS
      for value in set(labels.tolist()):
        mask = labels == value
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
      histograms = (
          batches
          | 'LabelHistograms' >> beam.CombineGlobally(
              _LabelHistograms(self._config.label.column,
                               self._config.split.seed)))
      side = [beam.pvalue.AsSingleton(histograms)]
    outputs = batches | 'AssignSplit' >> beam.ParDo(
        _AssignSplitFn(self._config, self._names), *side).with_outputs(
            *self._names)
    return {name: outputs[name] for name in self._names}


class SummarizeSplit(beam.PTransform):
  """Record batches of one split -> {'rows': n, 'positive': k}."""

  def __init__(self, config: DatasetConfig):
    super().__init__()
    self._label = config.label.column
    self._positive = config.label.positive.encode('utf-8')

  def expand(self, batches):
    label, positive = self._label, self._positive

    def summarize(batch):
      labels = _labels(batch, label)
      return {'rows': batch.num_rows,
              'positive': sum(1 for v in labels if v == positive)}

    return (batches
            | 'RowsAndPositives' >> beam.Map(summarize)
            | 'Sum' >> beam.CombineGlobally(SumCounts()))

