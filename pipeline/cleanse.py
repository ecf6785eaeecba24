"""Cleanse stage: raw records to typed record batches, or to the quarantine.

Every record ends up in exactly one place: a typed row of a record batch, a
quarantine record that says why (with source, line and raw text), or a count
of blank/comment/header lines. Nothing is silently dropped, which is what lets
the manifest reconcile input lines against output rows.

A missing value (`?`, empty, or whatever the config lists) is not an error: it
becomes a null list entry and the transform graph imputes it. The same graph
runs at serving time, so the cleanse stage only decides what is *usable*; how
values are normalised for the model lives in the transform.
"""

import collections
import csv
import json
import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from pipeline import features
from pipeline.config import Column, DatasetConfig
from pipeline.sources import RawChunk

QUARANTINE_TAG = 'quarantine'
COUNTS_TAG = 'counts'

# Quarantine reasons: stable codes, counted per reason in the manifest.
INVALID_ENCODING = 'invalid_encoding'
LINE_TOO_LONG = 'line_too_long'
MALFORMED_CSV = 'malformed_csv'
WRONG_ARITY = 'wrong_arity'
HEADER_MISMATCH = 'header_mismatch'
NOT_A_NUMBER = 'not_a_number'
NOT_AN_INTEGER = 'not_an_integer'
NON_FINITE = 'non_finite_number'
NOT_ALLOWED = 'value_not_allowed'
WRONG_TYPE = 'wrong_type'
MULTIPLE_VALUES = 'multiple_values'
UNPARSEABLE_RECORD = 'unparseable_record'
MISSING_LABEL = 'missing_label'
UNKNOWN_LABEL = 'unknown_label'

# Keys of the per-chunk counts.
LINES = 'lines'
BLANK_LINES = 'blank_lines'
COMMENT_LINES = 'comment_lines'
HEADER_LINES = 'header_lines'
ROWS_KEPT = 'rows_kept'
ROWS_QUARANTINED = 'rows_quarantined'
QUARANTINED_PREFIX = 'quarantined.'


class RowError(Exception):
  """A row cannot be used; carries the quarantine reason and a detail."""

  def __init__(self, reason: str, detail: str):
    super().__init__(detail)
    self.reason = reason
    self.detail = detail


def _as_text(value: Any, column: str) -> str:
  if isinstance(value, bytes):
    try:
      return value.decode('utf-8')
    except UnicodeDecodeError:
      raise RowError(INVALID_ENCODING,
                     f'{column}: value is not valid UTF-8') from None
  if isinstance(value, str):
    return value
  raise RowError(WRONG_TYPE, f'{column}: expected text, got '
                 f'{type(value).__name__} {value!r}')


def _int_converter(name: str) -> Callable[[Any], int]:

  def convert(value: Any) -> int:
    if isinstance(value, bool):
      raise RowError(WRONG_TYPE, f'{name}: expected an integer, got {value!r}')
    if isinstance(value, int):
      return value
    if isinstance(value, float):
      if not math.isfinite(value):
        raise RowError(NON_FINITE, f'{name}: {value!r} is not finite')
      if not value.is_integer():
        raise RowError(NOT_AN_INTEGER, f'{name}: {value!r} is not an integer')
      return int(value)
    text = _as_text(value, name).strip()
    try:
      return int(text)
    except ValueError:
      pass
    try:
      number = float(text)
    except ValueError:
      raise RowError(NOT_A_NUMBER,
                     f'{name}: {_clip(text)!r} is not a number') from None
    if not math.isfinite(number):
      raise RowError(NON_FINITE, f'{name}: {text!r} is not finite')
    if not number.is_integer():
      raise RowError(NOT_AN_INTEGER, f'{name}: {text!r} is not an integer')
    return int(number)

  return convert


def _float_converter(name: str) -> Callable[[Any], float]:

  def convert(value: Any) -> float:
    if isinstance(value, bool):
      raise RowError(WRONG_TYPE, f'{name}: expected a number, got {value!r}')
    if isinstance(value, (int, float)):
      number = float(value)
    else:
      text = _as_text(value, name).strip()
      try:
        number = float(text)
      except ValueError:
        raise RowError(NOT_A_NUMBER,
                       f'{name}: {_clip(text)!r} is not a number') from None
    if not math.isfinite(number):
      raise RowError(NON_FINITE, f'{name}: {value!r} is not finite')
    return number

  return convert


def _string_converter(column: Column) -> Callable[[Any], str]:
  allowed = frozenset(column.allowed_values or ())
  name = column.name

  def convert(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      text = str(value)
    else:
      text = _as_text(value, name).strip()
    if allowed and text not in allowed:
      raise RowError(NOT_ALLOWED, f'{name}: {_clip(text)!r} is not one of '
                     f'{sorted(allowed)}')
    return text

  return convert


def _label_converter(config: DatasetConfig) -> Callable[[Any], str]:
  label = config.label
  classes = frozenset(label.classes)

  def convert(value: Any) -> str:
    text = _as_text(value, label.column).strip()
    text = label.aliases.get(text, text)
    if text not in classes:
      raise RowError(UNKNOWN_LABEL, f'{label.column}: {_clip(text)!r} is not '
                     f'one of {list(label.classes)}')
    return text

  return convert


def _clip(text: str, limit: int = 80) -> str:
  return text if len(text) <= limit else text[:limit] + '...'


def _list_array(values: List[Any], value_type: pa.DataType) -> pa.Array:
  """A large_list array with one value per present row and null for missing."""
  present = np.fromiter((v is not None for v in values), dtype=bool,
                        count=len(values))
  offsets = np.zeros(len(values) + 1, dtype=np.int64)
  np.cumsum(present, out=offsets[1:])
  child = pa.array([v for v in values if v is not None], type=value_type)
  return pa.LargeListArray.from_arrays(
      pa.array(offsets), child, mask=pa.array(~present))


class RowParser:
  """Parses the records of a chunk into a record batch and quarantine records.

  Plain Python (no Beam), so every rule can be unit-tested directly.

  `label_optional=True` is the serving mode: data collected at serving time
  (request logs, serving CSV exports) has no label, and must still be parsed
  exactly like the training data for a skew check to compare like with like.
  A missing label is then a null instead of a quarantine, and a CSV row (or
  header) may leave out the label column altogether. Training data keeps the
  default, where a row without a label is unusable.
  """

  def __init__(self, config: DatasetConfig, label_optional: bool = False):
    self._config = config
    self._label_optional = label_optional
    self._schema = features.arrow_schema(config)
    self._missing = frozenset(config.missing_values)
    self._csv = config.csv
    self._all_names = config.column_names
    self._positions = {n: i for i, n in enumerate(self._all_names)}
    # Serving mode only: the CSV layout without the label column.
    self._unlabeled_names = [n for n in self._all_names
                             if n != config.label.column]
    self._unlabeled_positions = {
        n: i for i, n in enumerate(self._unlabeled_names)}
    self._columns = config.raw_columns  # same order as the arrow schema
    self._converters = [self._converter(c) for c in self._columns]
    self._label_index = [c.name for c in self._columns].index(
        config.label.column)

  def _converter(self, column: Column) -> Callable[[Any], Any]:
    if column.name == self._config.label.column:
      return _label_converter(self._config)
    if column.type == 'int':
      return _int_converter(column.name)
    if column.type == 'float':
      return _float_converter(column.name)
    return _string_converter(column)

  # ------------------------------------------------------------------ values

  def _is_missing(self, value: Any) -> bool:
    if value is None:
      return True
    if isinstance(value, float) and math.isnan(value):
      return True
    if isinstance(value, str):
      return value.strip() in self._missing
    if isinstance(value, bytes):
      try:
        return value.decode('utf-8').strip() in self._missing
      except UnicodeDecodeError:
        return False
    return False

  def _typed_row(self, get: Callable[[Column, int], Any]) -> List[Any]:
    row = []
    for i, (column, convert) in enumerate(zip(self._columns,
                                              self._converters)):
      value = get(column, i)
      if self._is_missing(value):
        if i == self._label_index and not self._label_optional:
          raise RowError(MISSING_LABEL,
                         f'{column.name}: the label is missing')
        row.append(None)
      else:
        row.append(convert(value))
    return row

  # -------------------------------------------------------------------- CSV

  def _split_csv(self, text: str) -> List[str]:
    opts = self._csv
    if opts.quote_char not in text:
      return text.split(opts.delimiter)
    try:
      return next(csv.reader([text], delimiter=opts.delimiter,
                             quotechar=opts.quote_char,
                             skipinitialspace=opts.skip_initial_space,
                             strict=True))
    except csv.Error as e:
      raise RowError(MALFORMED_CSV, f'cannot split the line: {e}') from None

  def _csv_row(self, line: bytes, line_no: int, counts: collections.Counter
              ) -> Optional[List[Any]]:
    """A typed row, or None for a line that is not a data row."""
    opts = self._csv
    if len(line) > opts.max_line_bytes:
      raise RowError(LINE_TOO_LONG, f'line is {len(line)} bytes; the limit '
                     f'(input.csv.max_line_bytes) is {opts.max_line_bytes}')
    try:
      text = line.decode(opts.encoding)
    except UnicodeDecodeError as e:
      raise RowError(INVALID_ENCODING,
                     f'not valid {opts.encoding} at byte {e.start}') from None
    stripped = text.strip()
    if not stripped:
      counts[BLANK_LINES] += 1
      return None
    if opts.comment_prefix and stripped.startswith(opts.comment_prefix):
      counts[COMMENT_LINES] += 1
      return None
    fields = self._split_csv(text)
    if opts.header and line_no == 1:
      names = [f.strip() for f in fields]
      if names != self._all_names and not (
          self._label_optional and names == self._unlabeled_names):
        raise RowError(HEADER_MISMATCH,
                       f'header {_clip(",".join(names))!r} does not match the '
                       f'configured columns {",".join(self._all_names)}')
      counts[HEADER_LINES] += 1
      return None
    if len(fields) != len(self._all_names):
      if not self._label_optional:
        raise RowError(WRONG_ARITY, f'expected {len(self._all_names)} fields, '
                       f'got {len(fields)}')
      if len(fields) != len(self._unlabeled_names):
        raise RowError(WRONG_ARITY, f'expected {len(self._all_names)} fields '
                       f'(or {len(self._unlabeled_names)} without the label '
                       f'{self._config.label.column}), got {len(fields)}')
      unlabeled = self._unlabeled_positions
      return self._typed_row(
          lambda c, _: fields[unlabeled[c.name]].strip()
          if c.name in unlabeled else None)
    positions = self._positions
    return self._typed_row(lambda c, _: fields[positions[c.name]].strip())

  # --------------------------------------------------------- Parquet / TFRecord

  def _dict_row(self, record: Dict[str, Any]) -> List[Any]:
    if '__unparseable__' in record:
      raise RowError(UNPARSEABLE_RECORD, 'record is not a tf.train.Example')

    def get(column: Column, _):
      value = record.get(column.name)
      if isinstance(value, (list, tuple)):
        if len(value) > 1:
          raise RowError(MULTIPLE_VALUES,
                         f'{column.name}: expected one value, got {len(value)}')
        value = value[0] if value else None
      return value

    return self._typed_row(get)

  @staticmethod
  def _raw_text(record: Any, fmt: str, encoding: str) -> str:
    if fmt == 'csv':
      return record.decode(encoding, errors='backslashreplace')
    return json.dumps(record, default=lambda v: v.decode(
        'utf-8', errors='backslashreplace') if isinstance(v, bytes) else repr(v))

  # ------------------------------------------------------------------ chunks

  def parse_chunk(self, chunk: RawChunk
                 ) -> Tuple[Optional[pa.RecordBatch], List[Dict[str, Any]],
                            collections.Counter]:
    """Returns (record batch of good rows or None, quarantine, counts)."""
    counts = collections.Counter()
    quarantine = []
    columns = [[] for _ in self._columns]
    is_csv = chunk.format == 'csv'
    for offset, record in enumerate(chunk.records):
      line_no = chunk.first_line + offset
      counts[LINES] += 1
      try:
        row = (self._csv_row(record, line_no, counts) if is_csv
               else self._dict_row(record))
      except RowError as e:
        counts[ROWS_QUARANTINED] += 1
        counts[QUARANTINED_PREFIX + e.reason] += 1
        quarantine.append({
            'source': chunk.source,
            'line': line_no,
            'reason': e.reason,
            'detail': e.detail,
            'raw': self._raw_text(record, chunk.format, self._csv.encoding),
        })
        continue
      if row is None:
        continue
      counts[ROWS_KEPT] += 1
      for values, value in zip(columns, row):
        values.append(value)
    batch = None
    if counts[ROWS_KEPT]:
      arrays = [
          _list_array(values, field.type.value_type)
          for values, field in zip(columns, self._schema)
      ]
      batch = pa.RecordBatch.from_arrays(arrays, schema=self._schema)
    return batch, quarantine, counts


class _CleanseFn(beam.DoFn):

  def __init__(self, config: DatasetConfig):
    self._config = config
    self._parser = None
    self._rows_read = Metrics.counter('cleanse', 'rows_read')
    self._rows_kept = Metrics.counter('cleanse', 'rows_kept')
    self._rows_quarantined = Metrics.counter('cleanse', 'rows_quarantined')
    self._by_reason = {}

  def setup(self):
    self._parser = RowParser(self._config)

  def process(self, chunk: RawChunk):
    batch, quarantine, counts = self._parser.parse_chunk(chunk)
    self._rows_read.inc(counts[ROWS_KEPT] + counts[ROWS_QUARANTINED])
    self._rows_kept.inc(counts[ROWS_KEPT])
    self._rows_quarantined.inc(counts[ROWS_QUARANTINED])
    for key, n in counts.items():
      if key.startswith(QUARANTINED_PREFIX):
        reason = key[len(QUARANTINED_PREFIX):]
        if reason not in self._by_reason:
          self._by_reason[reason] = Metrics.counter('cleanse',
                                                    'quarantined_' + reason)
        self._by_reason[reason].inc(n)
    if batch is not None:
      yield batch
    for record in quarantine:
      yield beam.pvalue.TaggedOutput(QUARANTINE_TAG, record)
    yield beam.pvalue.TaggedOutput(COUNTS_TAG, dict(counts))


class CleanseRows(beam.PTransform):
  """RawChunks -> (record batches, quarantine records, per-chunk counts).

  The main output holds typed `pa.RecordBatch`es of the raw features and the
  label; the `quarantine` output holds JSON-ready dicts; `counts` holds one
  dict per chunk for the manifest.
  """

  def __init__(self, config: DatasetConfig):
    super().__init__()
    self._config = config

  def expand(self, chunks):
    return chunks | 'ParseAndCheck' >> beam.ParDo(
        _CleanseFn(self._config)).with_outputs(
            QUARANTINE_TAG, COUNTS_TAG, main='rows')


class SumCounts(beam.CombineFn):
  """Adds up count dicts into one dict."""

  def create_accumulator(self):
    return collections.Counter()

  def add_input(self, acc, counts):
    acc.update(counts)
    return acc

  def merge_accumulators(self, accs: Iterable[collections.Counter]):
    total = collections.Counter()
    for acc in accs:
      total.update(acc)
    return total

  def extract_output(self, acc):
    return dict(acc)
