"""The labelled raw rows a candidate model and the served one are scored on.

trainer.push compares two exports, each with its own transform graph, so
they can only be compared on raw rows: both read the same serialized raw
tf.Examples through their serving_default signature, as a served request
is read. The rows come from one of two places:

- a split of the preprocess run the candidate was trained on, as the job
  writes it with --write-raw (DIR/raw/<split>-*.tfrecord.gz: cleansed raw
  rows with their label);
- files given with --data: rows in the dataset's own CSV dialect (read as
  trainer.predict reads them) or raw tf.Examples with the label
  (`*.tfrecord`, `*.tfrecord.gz`, e.g. another split's raw/ shards).

A row without a usable label (missing, or not one of the label's classes)
or that cannot be read is not scored; how many and why is recorded.
"""

import collections
import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from core import layout
from core import values as raw_values
from core.config import DatasetConfig
from core.errors import InputError
from trainer import predict

_TFRECORD_SUFFIXES = ('.tfrecord', '.tfrecord.gz')
_READ_BATCH = 1024
NO_LABEL = 'no label'
UNKNOWN_CLASS = 'label not one of the classes'
LABEL_NOT_NUMBER = 'label not a number'
UNREADABLE = 'row cannot be read'


@dataclasses.dataclass
class LabelledRows:
  """Serialized raw tf.Examples and their labels, in the same order."""
  source: str  # what was read, for the decision and the log
  examples: List[bytes]
  labels: List[Any]  # a class name (classification) or a float
  skipped: Dict[str, int]  # reason -> rows not scored

  def __len__(self) -> int:
    return len(self.examples)

  def column(self, config: DatasetConfig, name: str) -> np.ndarray:
    """One raw column's values, one per row: str or None for a string
    column, float (NaN when missing) otherwise."""
    return self.columns(config, [name])[name]

  def columns(self, config: DatasetConfig,
              names: Sequence[str]) -> Dict[str, np.ndarray]:
    """Several raw columns' values (as `column` gives them), each row's
    tf.Example parsed once for all of them."""
    is_string = {n: config.column(n).raw_type == 'string' for n in names}
    out: Dict[str, List[Any]] = {n: [] for n in names}
    for serialized in self.examples:
      feature = tf.train.Example.FromString(serialized).features.feature
      for name, string in is_string.items():
        value = _first(feature[name]) if name in feature else None
        if string:
          out[name].append(
              value.decode('utf-8', 'replace') if isinstance(value, bytes
                                                            ) else None)
        else:
          out[name].append(
              float(value) if value is not None and
              not isinstance(value, bytes) else math.nan)
    return {
        n: np.array(v, dtype=object if is_string[n] else np.float64)
        for n, v in out.items()
    }


def targets(config: DatasetConfig, labels: Sequence[Any]) -> np.ndarray:
  """The labels as a model's head takes them (pipeline/preprocessing_fn's
  label_transform, in the label's own units): 1 for the positive class
  and 0 otherwise (binary), the index in label.classes (multiclass), the
  value (regression). Each model is judged with its own config, so two
  models whose classes are in a different order are still compared
  fairly."""
  label = config.label
  if not label.is_classification:
    return np.asarray(labels, dtype=np.float64)
  if label.positive is not None:
    return np.array([int(v == label.positive) for v in labels], np.int64)
  index = {c: i for i, c in enumerate(label.classes)}
  return np.array([index[v] for v in labels], np.int64)


def _first(feature: tf.train.Feature) -> Any:
  for kind in ('bytes_list', 'int64_list', 'float_list'):
    values = getattr(feature, kind).value
    if values:
      return values[0]
  return None


class _Collector:
  """Keeps the rows with a usable label; counts the others by reason."""

  def __init__(self, config: DatasetConfig, source: str):
    self.config = config
    self.rows = LabelledRows(source, [], [], collections.Counter())

  def add(self, serialized: bytes, raw_label: Any) -> None:
    label = self.config.label
    if isinstance(raw_label, bytes):
      raw_label = raw_label.decode('utf-8', 'replace')
    if isinstance(raw_label, str):
      raw_label = raw_label.strip()
      if raw_label in self.config.missing_values:
        raw_label = None
    if raw_label is None:
      self.rows.skipped[NO_LABEL] += 1
      return
    value: Any
    if label.is_classification:
      value = label.aliases.get(str(raw_label), str(raw_label))
      if value not in label.classes:
        self.rows.skipped[UNKNOWN_CLASS] += 1
        return
    else:
      try:
        value = float(raw_label)
      except ValueError:
        value = math.nan
      if not math.isfinite(value):
        self.rows.skipped[LABEL_NOT_NUMBER] += 1
        return
    self.rows.examples.append(serialized)
    self.rows.labels.append(value)

  def skip(self, reason: str) -> None:
    self.rows.skipped[reason] += 1

  def done(self) -> LabelledRows:
    rows = self.rows
    rows.skipped = dict(rows.skipped)
    if not rows.examples:
      skipped = ', '.join(f'{n} {r}' for r, n in rows.skipped.items())
      raise InputError(f'no labelled row to score in {rows.source}' +
                       (f' ({skipped})' if skipped else ''))
    return rows


def _read_examples(collector: _Collector, files: Sequence[str]) -> None:
  """Raw tf.Examples carrying the label column."""
  name = collector.config.label.column
  for path in files:
    compression = 'GZIP' if path.endswith('.gz') else ''
    # Records come out in batches: one eager iterator step per record cost
    # more than decoding it (1.1 s of the 16,281 Adult test rows).
    records = tf.data.TFRecordDataset(
        path, compression_type=compression).batch(_READ_BATCH)
    try:
      for batch in records:
        for serialized in batch.numpy():
          feature = tf.train.Example.FromString(serialized).features.feature
          label = _first(feature[name]) if name in feature else None
          collector.add(serialized, label)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      raise InputError(f'{path}: not a TFRecord file of tf.Examples'
                       f'{" (gzip)" if compression else ""}: '
                       f'{str(e).splitlines()[0]}') from None


def _read_csv(collector: _Collector, files: Sequence[str]) -> None:
  """Rows in the dataset's CSV dialect, read as trainer.predict reads
  them (window columns computed over each file)."""
  config = collector.config
  for path in files:
    encoder = predict.RowEncoder(config)
    windows = (
        predict.file_window_values(config, path) if config.windows else None)
    # pylint: disable-next=protected-access
    for line_no, text in predict._data_lines(path, encoder):
      if not isinstance(text, str):  # undecodable or too long
        collector.skip(UNREADABLE)
        continue
      try:
        serialized, label = encoder.encode(encoder.split(text))
      except raw_values.RowError:
        collector.skip(UNREADABLE)
        continue
      if windows is not None:
        serialized = predict.with_window_values(serialized,
                                                windows.get(line_no))
      collector.add(serialized, label)


def from_files(config: DatasetConfig, pattern: str) -> LabelledRows:
  """Rows of the files matching `pattern` (--data)."""
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise InputError(f'--data {pattern}: no file matches')
  collector = _Collector(config, pattern)
  examples = [f for f in files if f.endswith(_TFRECORD_SUFFIXES)]
  others = [f for f in files if not f.endswith(_TFRECORD_SUFFIXES)]
  if others and config.format != 'csv':
    raise InputError(
        f'--data {pattern}: {others[0]} is not raw tf.Examples '
        f'({" or ".join(_TFRECORD_SUFFIXES)}), and rows of the dataset\'s '
        f'{config.format} files cannot be scored here; give the rows as CSV '
        'or as the preprocess job\'s raw/ shards')
  _read_examples(collector, examples)
  _read_csv(collector, others)
  return collector.done()


def from_split(config: DatasetConfig, preprocess_dir: str,
               split: str) -> LabelledRows:
  """The raw rows of one split of a preprocess output (--write-raw)."""
  output = layout.PreprocessOutput(preprocess_dir)
  files = output.raw_files(split)
  if not files:
    raise InputError(
        f'no raw {split} rows in {preprocess_dir}: nothing matches '
        f'{output.raw_pattern(split)} (the preprocess job writes them with '
        '--write-raw); give labelled rows with --data instead')
  collector = _Collector(config, output.raw_pattern(split))
  _read_examples(collector, files)
  return collector.done()


def describe(rows: LabelledRows, limit: Optional[int] = None) -> str:
  """'6,511 rows of SOURCE (12 not scored: 10 no label, 2 ...)'."""
  text = f'{len(rows):,d} rows of {rows.source}'
  if rows.skipped:
    total = sum(rows.skipped.values())
    parts = ', '.join(
        f'{n:,d} {r}' for r, n in sorted(rows.skipped.items())[:limit])
    text += f' ({total:,d} not scored: {parts})'
  return text
