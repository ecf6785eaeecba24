"""Cleanse stage: raw records to typed record batches, or to the quarantine.

Every record ends up in exactly one place: a typed row of a record batch, a
quarantine record that says why (with source, line and raw text), or a count
of blank/comment/header lines. Nothing is silently dropped, which is what lets
the manifest reconcile input lines against output rows.

A missing value (`?`, empty, or whatever the config lists) is not an error: it
becomes a null list entry and the transform graph imputes it. The same graph
runs at serving time, so the cleanse stage only decides what is *usable*; how
values are normalised for the model lives in the transform.

A value that does not fit its column's type (an integer beyond int64, a
number beyond float32 or that overflows to infinity, a timestamp beyond year
9999) is `out_of_range`: quarantined like any other unusable value, never an
overflow that stops the job.
"""

import collections
import csv
import json
import math
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
)

import apache_beam as beam
from apache_beam.metrics import Metrics
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import arrays
from core import values as raw_values
from core.config import Column
from core.config import DatasetConfig
from pipeline import features
from pipeline.sources import line_length
from pipeline.sources import LONG_LINE_PREFIX_BYTES
from pipeline.sources import RawChunk

QUARANTINE_TAG = 'quarantine'
COUNTS_TAG = 'counts'

# Quarantine reasons: stable codes, counted per reason in the manifest.
INVALID_ENCODING = raw_values.INVALID_ENCODING
LINE_TOO_LONG = raw_values.LINE_TOO_LONG
MALFORMED_CSV = raw_values.MALFORMED_CSV
WRONG_ARITY = raw_values.WRONG_ARITY
HEADER_MISMATCH = raw_values.HEADER_MISMATCH
NOT_A_NUMBER = raw_values.NOT_A_NUMBER
NOT_AN_INTEGER = raw_values.NOT_AN_INTEGER
NON_FINITE = raw_values.NON_FINITE
OUT_OF_RANGE = raw_values.OUT_OF_RANGE
NOT_ALLOWED = raw_values.NOT_ALLOWED
WRONG_TYPE = raw_values.WRONG_TYPE
MULTIPLE_VALUES = 'multiple_values'
NOT_A_BOOLEAN = raw_values.NOT_A_BOOLEAN
NOT_A_TIMESTAMP = raw_values.NOT_A_TIMESTAMP
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

RowError = raw_values.RowError
_FLOAT32_MAX = raw_values.FLOAT32_MAX


def _label_converter(config: DatasetConfig) -> Callable[[Any], Any]:
  label = config.label
  column = config.column(label.column)
  if not label.is_classification:
    return raw_values.value_parser(column)
  classes = frozenset(label.classes)
  text_of = raw_values.value_parser(column, check_allowed=False)

  def convert(value: Any) -> str:
    text = text_of(value)
    text = label.aliases.get(text, text)
    if text not in classes:
      raise RowError(UNKNOWN_LABEL, f'{_clip(text)!r} is not one of '
                     f'{list(label.classes)}', label.column)
    return text

  return convert


_clip = raw_values.clip


def _list_array(values: List[Any], value_type: pa.DataType) -> pa.Array:
  """A large_list array: one value per present row (a list column's row is
  a Python list of any length) and null for missing."""
  present = np.fromiter((v is not None for v in values),
                        dtype=bool,
                        count=len(values))
  if any(isinstance(v, list) for v in values):
    lengths = np.fromiter(
        (len(v) if isinstance(v, list) else int(v is not None) for v in values),
        dtype=np.int64,
        count=len(values))
    flat = [
        x for v in values if v is not None
        for x in (v if isinstance(v, list) else [v])
    ]
  else:
    lengths = present.astype(np.int64)
    flat = [v for v in values if v is not None]
  offsets = np.zeros(len(values) + 1, dtype=np.int64)
  np.cumsum(lengths, out=offsets[1:])
  child = pa.array(flat, type=value_type)
  return pa.LargeListArray.from_arrays(
      pa.array(offsets), child, mask=pa.array(~present))


# What Python's str.strip() removes from ASCII text.
_ASCII_WHITESPACE = ' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f'
# Numbers in the plain forms that Arrow's casts parse exactly as Python's
# int() and float() do; anything else is converted value by value in Python.
_PLAIN_INT = r'^-?[0-9]{1,18}$'
_PLAIN_FLOAT = r'^-?(?:[0-9]{1,300}(?:\.[0-9]*)?|\.[0-9]+)$'


def _ascii_compatible(encoding: str) -> bool:
  """Whether `encoding` decodes every ASCII byte to the same character."""
  ascii_bytes = bytes(range(128))
  try:
    return ascii_bytes.decode(encoding) == ascii_bytes.decode('ascii')
  except (UnicodeDecodeError, LookupError):
    return False


def _line_flags(lines: pa.Array, special: Sequence[int]) -> np.ndarray:
  """Per line: does it hold a non-ASCII byte or one of the `special` bytes?"""
  buffers = lines.buffers()
  offsets = np.frombuffer(buffers[1], dtype=np.int32)[:len(lines) + 1]
  flags = np.zeros(len(lines), dtype=bool)
  if buffers[2] is None or offsets[-1] == 0:
    return flags
  data = np.frombuffer(buffers[2], dtype=np.uint8)[:offsets[-1]]
  hit = data >= 0x80
  for byte in special:
    hit |= data == byte
  positions = np.flatnonzero(hit)
  if len(positions):
    flags[np.searchsorted(offsets, positions, side='right') - 1] = True
  return flags


def _wrap_in_lists(values: pa.Array, list_type: pa.DataType) -> pa.Array:
  """[v] for each value, null for each null: the cleansed column layout."""
  present = np.asarray(values.is_valid())
  offsets = np.zeros(len(values) + 1, dtype=np.int64)
  np.cumsum(present, out=offsets[1:])
  child = values.drop_null() if values.null_count else values
  return pa.LargeListArray.from_arrays(
      pa.array(offsets),
      child.cast(list_type.value_type),
      mask=pa.array(~present))


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
    self._unlabeled_names = [
        n for n in self._all_names if n != config.label.column
    ]
    self._unlabeled_positions = {
        n: i for i, n in enumerate(self._unlabeled_names)
    }
    self._columns = config.raw_columns  # same order as the arrow schema
    self._converters = [self._converter(c) for c in self._columns]
    self._label_index = [c.name for c in self._columns
                        ].index(config.label.column)
    # The column-at-once CSV path handles single-valued columns; a list
    # column's rows are parsed record by record.
    self._fast_csv = (
        config.format == 'csv' and _ascii_compatible(self._csv.encoding) and
        not any(c.is_list for c in self._columns))

  def _converter(self, column: Column) -> Callable[[Any], Any]:
    if column.name == self._config.label.column:
      return _label_converter(self._config)
    return raw_values.value_parser(column)

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
    row: List[Any] = []
    for i, (column, convert) in enumerate(zip(self._columns, self._converters)):
      value = get(column, i)
      if self._is_missing(value):
        if i == self._label_index and not self._label_optional:
          raise RowError(MISSING_LABEL, f'{column.name}: the label is missing')
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
      return next(
          csv.reader([text],
                     delimiter=opts.delimiter,
                     quotechar=opts.quote_char,
                     skipinitialspace=opts.skip_initial_space,
                     strict=True))
    except csv.Error as e:
      raise RowError(MALFORMED_CSV, f'cannot split the line: {e}') from None

  def _csv_row(self, line: bytes, line_no: int,
               counts: collections.Counter) -> Optional[List[Any]]:
    """A typed row, or None for a line that is not a data row."""
    opts = self._csv
    length = line_length(line)
    if length > opts.max_line_bytes:
      raise RowError(
          LINE_TOO_LONG, f'line is {length} bytes; the limit '
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
      if names != self._all_names and not (self._label_optional and
                                           names == self._unlabeled_names):
        raise RowError(
            HEADER_MISMATCH,
            f'header {_clip(",".join(names))!r} does not match the '
            f'configured columns {",".join(self._all_names)}')
      counts[HEADER_LINES] += 1
      return None
    if len(fields) != len(self._all_names):
      if not self._label_optional:
        raise RowError(
            WRONG_ARITY, f'expected {len(self._all_names)} fields, '
            f'got {len(fields)}')
      if len(fields) != len(self._unlabeled_names):
        raise RowError(
            WRONG_ARITY, f'expected {len(self._all_names)} fields '
            f'(or {len(self._unlabeled_names)} without the label '
            f'{self._config.label.column}), got {len(fields)}')
      unlabeled = self._unlabeled_positions
      return self._typed_row(lambda c, _: fields[unlabeled[c.name]].strip()
                             if c.name in unlabeled else None)
    positions = self._positions
    # A derived (window) column is not in the file: missing until the
    # window stage computes it.
    return self._typed_row(lambda c, _: fields[positions[c.name]].strip()
                           if c.name in positions else None)

  # --------------------------------------------------------- Parquet / TFRecord

  def _dict_row(self, record: Dict[str, Any]) -> List[Any]:
    if '__unparseable__' in record:
      raise RowError(UNPARSEABLE_RECORD, 'record is not a tf.train.Example')

    def get(column: Column, _):
      value = record.get(column.name)
      if isinstance(value, (list, tuple)) and not column.is_list:
        if len(value) > 1:
          raise RowError(
              MULTIPLE_VALUES,
              f'{column.name}: expected one value, got {len(value)}')
        value = value[0] if value else None
      return value

    return self._typed_row(get)

  def _raw_text(self, record: Any, fmt: str) -> Tuple[str, str]:
    """The record as the quarantine keeps it, and a note when that is only
    the start of it: a record beyond max_line_bytes is kept as its first
    LONG_LINE_PREFIX_BYTES bytes (with its length in the note), so one huge
    line cannot swell the quarantine."""
    limit = self._csv.max_line_bytes
    if fmt == 'csv':
      length = line_length(record)
      if length <= limit:
        return record.decode(self._csv.encoding, errors='backslashreplace'), ''
      prefix = bytes(record[:LONG_LINE_PREFIX_BYTES])
      return (prefix.decode(self._csv.encoding, errors='backslashreplace'),
              f'; raw holds its first {len(prefix)} of {length} bytes')
    text = json.dumps(
        record,
        default=lambda v: v.decode('utf-8', errors='backslashreplace')
        if isinstance(v, bytes) else repr(v))
    if len(text) <= limit:
      return text, ''
    return (text[:LONG_LINE_PREFIX_BYTES],
            f'; raw holds the first {LONG_LINE_PREFIX_BYTES} of the '
            f'{len(text)} characters of the record as JSON')

  # ------------------------------------------------------------------ chunks

  def parse_chunk(
      self, chunk: RawChunk
  ) -> Tuple[Optional[pa.RecordBatch], List[Dict[str, Any]],
             collections.Counter]:
    """Returns (record batch of good rows or None, quarantine, counts)."""
    if chunk.format == 'csv' and self._fast_csv and chunk.records:
      return self._parse_csv_chunk(chunk)
    return self._parse_records(chunk, range(len(chunk.records)))

  def _parse_records(
      self, chunk: RawChunk, indices: Iterable[int]
  ) -> Tuple[Optional[pa.RecordBatch], List[Dict[str, Any]],
             collections.Counter]:
    """Record by record: the reference implementation of every rule."""
    columns, kept, quarantine, counts = self._parse_rows(chunk, indices)
    batch = None
    if kept:
      arrays = [
          _list_array(values, field.type.value_type)
          for values, field in zip(columns, self._schema)
      ]
      batch = pa.RecordBatch.from_arrays(arrays, schema=self._schema)
    return batch, quarantine, counts

  def _parse_rows(self, chunk: RawChunk, indices: Iterable[int]):
    """(typed column lists, kept record indices, quarantine, counts)."""
    counts: collections.Counter[str] = collections.Counter()
    quarantine = []
    columns: List[List[Any]] = [[] for _ in self._columns]
    kept = []
    is_csv = chunk.format == 'csv'
    for offset in indices:
      record = chunk.records[offset]
      line_no = chunk.line(offset)
      counts[LINES] += 1
      try:
        row = (
            self._csv_row(record, line_no, counts)
            if is_csv else self._dict_row(record))
      except RowError as e:
        counts[ROWS_QUARANTINED] += 1
        counts[QUARANTINED_PREFIX + e.reason] += 1
        raw, note = self._raw_text(record, chunk.format)
        quarantine.append({
            'source': chunk.source,
            'line': line_no,
            'reason': e.reason,
            'detail': e.detail + note,
            'raw': raw,
        })
        continue
      if row is None:
        continue
      counts[ROWS_KEPT] += 1
      kept.append(offset)
      for values, value in zip(columns, row):
        values.append(value)
    return columns, kept, quarantine, counts

  # ------------------------------------------------------- CSV, vectorised

  def _parse_csv_chunk(self, chunk: RawChunk):
    """CSV lines column by column with Arrow compute, same rules and results.

    Plain data lines (ASCII, no quote character, the configured number of
    fields, every value usable) are split, trimmed and typed for the whole
    chunk at once. Every other line (blank, comment, header, quoted,
    non-ASCII, too long, wrong arity, any unusable or unusual value) goes
    through the record-by-record parser, which decides what it is and why;
    the rows of both are merged back in line order.
    """
    opts = self._csv
    records = chunk.records
    n = len(records)
    lines = pa.array(records, type=pa.binary())
    lengths = pc.binary_length(lines).to_numpy(zero_copy_only=False)
    slow = _line_flags(lines, [ord(opts.quote_char)])
    slow |= lengths > opts.max_line_bytes
    # Lines the reader cut short (a record spanning lines holds the quote
    # character, so it is slow already).
    for i, record in enumerate(records):
      if type(record) is not bytes:  # pylint: disable=unidiomatic-typecheck
        slow[i] = True
    if opts.header and chunk.first_line == 1:
      slow[0] = True
    fast_index = np.flatnonzero(~slow)
    if len(fast_index):
      text = lines.take(pa.array(fast_index)).cast(pa.string())
      stripped = pc.ascii_trim(text, characters=_ASCII_WHITESPACE)
      plain = pc.greater(pc.binary_length(stripped), 0)
      if opts.comment_prefix:
        plain = pc.and_(
            plain,
            pc.invert(pc.starts_with(stripped, pattern=opts.comment_prefix)))
      fields = pc.split_pattern(text, pattern=opts.delimiter)
      plain = pc.and_(
          plain, pc.equal(pc.list_value_length(fields), len(self._all_names)))
      plain = plain.to_numpy(zero_copy_only=False)
      fields = fields.filter(pa.array(plain))
      fast_index = fast_index[plain]
    good, values = self._typed_columns(
        fields if len(fast_index) else None, len(fast_index))
    fast_index = fast_index[good]
    values = [v.filter(pa.array(good)) for v in values]
    slow_index = np.setdiff1d(np.arange(n), fast_index, assume_unique=True)
    columns, kept, quarantine, counts = self._parse_rows(
        chunk, slow_index.tolist())
    counts[LINES] += len(fast_index)
    if len(fast_index):
      counts[ROWS_KEPT] += len(fast_index)
    if not len(fast_index) and not kept:
      return None, quarantine, counts
    order = None
    if kept:
      values = [
          pa.concat_arrays([v, pa.array(c, type=v.type)])
          for v, c in zip(values, columns)
      ]
      order = pa.array(
          np.argsort(
              np.concatenate([fast_index,
                              np.asarray(kept, dtype=np.int64)]),
              kind='stable'))
    arrays = []
    for v, field in zip(values, self._schema):
      ordered = v.take(order) if order is not None else v
      arrays.append(_wrap_in_lists(ordered, field.type))
    return (pa.RecordBatch.from_arrays(arrays,
                                       schema=self._schema), quarantine, counts)

  def _typed_columns(self, fields: Optional[pa.ListArray],
                     n: int) -> Tuple[np.ndarray, List[pa.Array]]:
    """(rows usable as they are, one typed array per raw column) for the
    split fields of `n` plain lines; null where a value is missing."""
    good = np.ones(n, dtype=bool)
    out = []
    if n == 0:
      return good, [pa.array([], type=f.type.value_type) for f in self._schema]
    assert fields is not None  # None only for no lines (n == 0), done above
    flat = pc.ascii_trim(fields.flatten(), characters=_ASCII_WHITESPACE)
    width = len(self._all_names)
    missing_set = pa.array(sorted(self._missing), type=pa.string())
    for i, (column, convert) in enumerate(zip(self._columns, self._converters)):
      if column.derived:  # not in the file; the window stage computes it
        out.append(pa.nulls(n, self._schema.field(i).type.value_type))
        continue
      values = flat.take(
          pa.array(np.arange(self._positions[column.name], n * width, width)))
      missing = pc.is_in(
          values, value_set=missing_set).to_numpy(zero_copy_only=False)
      value_type = self._schema.field(i).type.value_type
      if i == self._label_index:
        good &= ~missing  # a missing label: quarantined by the slow path
        array = self._map_unique(values, convert, good, value_type)
      elif column.type in ('bool', 'timestamp'):
        array = self._map_unique(values, convert, good, value_type)
      elif column.type == 'int':
        array = self._numbers(values, missing, convert, good, _PLAIN_INT,
                              np.int64)
      elif column.type == 'float':
        array = self._numbers(values, missing, convert, good, _PLAIN_FLOAT,
                              np.float32)
      elif column.allowed_values:
        array = self._map_unique(values, convert, good, value_type)
      else:
        array = values
      out.append(
          pc.if_else(pa.array(missing), pa.scalar(None, array.type),
                     array).cast(value_type))
    return good, out

  @staticmethod
  def _map_unique(values: pa.Array, convert: Callable[[Any], Any],
                  good: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """Converts each distinct value once; rows whose value fails are marked
    not good (the record-by-record parser then says why)."""
    encoded = pc.dictionary_encode(values)
    converted, failed = [], []
    for code, text in enumerate(encoded.dictionary.to_pylist()):
      try:
        converted.append(convert(text))
      except RowError:
        converted.append(None)
        failed.append(code)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    if failed:
      good &= ~np.isin(codes, failed)
    if value_type in (pa.large_binary(), pa.binary()):
      value_type = pa.string()  # cast to the column's binary type by the caller
    return pa.array(converted, type=value_type).take(encoded.indices)

  @staticmethod
  def _numbers(values: pa.Array, missing: np.ndarray, convert: Callable[[Any],
                                                                        Any],
               good: np.ndarray, pattern: str, dtype) -> pa.Array:
    """Numbers parsed by Arrow where plain, by `convert` otherwise."""
    out = np.zeros(len(values), dtype=dtype)
    plain = pc.match_substring_regex(
        values, pattern).to_numpy(zero_copy_only=False) & ~missing
    if plain.any():
      if dtype == np.int64:
        out[plain] = pc.cast(values.filter(pa.array(plain)),
                             pa.int64()).to_numpy()
      else:
        doubles = pc.cast(values.filter(pa.array(plain)),
                          pa.float64()).to_numpy()
        in_range = np.abs(doubles) <= _FLOAT32_MAX
        out[np.flatnonzero(plain)[in_range]] = doubles[in_range]
        plain[np.flatnonzero(plain)[~in_range]] = False
    for i in np.flatnonzero(~plain & ~missing):
      try:
        out[i] = convert(values[int(i)].as_py())
      except (RowError, OverflowError):
        # Unusable, or out of range for the column type: left to the
        # record-by-record parser, which decides.
        good[i] = False
    return pa.array(out)


def _one_value_per_row(column: pa.Array) -> Optional[pa.Array]:
  """A list column's values, one per row (null where the row is null), when
  every row holds exactly one non-null value or is null; else None.

  Most columns of a tabular dataset are such lists: their offsets count
  0, 1, 2, ... and cost as much to carry as the values themselves.
  """
  kind = column.type
  if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
    return None
  offsets = column.offsets.to_numpy()
  lengths = np.diff(offsets)
  valid = None
  if column.null_count:
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    if not (lengths == valid).all():
      return None
  elif not (lengths == 1).all():
    return None
  # A sliced list array's offsets index into its whole child array.
  values = column.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
  if values.null_count:
    return None
  if valid is None:
    return values
  rows = np.cumsum(valid) - 1
  return values.take(pa.array(rows, mask=~valid))


def _lists_again(flat: pa.Array, kind: pa.DataType) -> pa.Array:
  """The list column of type `kind` that _one_value_per_row flattened."""
  if (pa.types.is_dictionary(flat.type) and
      not pa.types.is_dictionary(kind.value_type)):
    flat = flat.dictionary_decode()  # see RecordBatchCoder.encode
  valid = flat.is_valid().to_numpy(zero_copy_only=False)
  offsets = np.zeros(
      len(flat) + 1,
      dtype=np.int64 if pa.types.is_large_list(kind) else np.int32)
  np.cumsum(valid, out=offsets[1:])
  lists = pa.LargeListArray if pa.types.is_large_list(kind) else pa.ListArray
  return lists.from_arrays(
      pa.array(offsets),
      flat.drop_null() if flat.null_count else flat,
      type=kind,
      mask=pa.array(~valid) if flat.null_count else None)


class RecordBatchCoder(beam.coders.Coder):
  """How record batches travel between stages: Arrow IPC, zstd-compressed.

  Registered for `pa.RecordBatch`, so every PCollection typed as record
  batches uses it. Runners keep or ship whole PCollections between stages
  (the DirectRunner holds them in memory until the next stage runs; Flink
  and Spark shuffle them). A list column with one value per row (or none,
  where the row is null) travels as its values, without the offsets, and
  the batch's own schema travels in the schema's metadata to restore it;
  its strings travel dictionary-encoded when they repeat. Cleansed Adult
  rows take about 11 bytes (39 with their offsets and plain strings, ~320
  pickled), which keeps the job's memory nearly flat as data grows.
  """

  # On the calling thread, the same bytes: a batch's columns are small to
  # compress, and handed to Arrow's thread pool they wait for a core the
  # job's other threads hold. In the million-row job, encoding took 1.9-2.1 s
  # of wall time for 1.0-1.1 s of the calling thread's CPU, and 1.45-1.6 s
  # done on it; decoding 1.5 s, and 1.2-1.5 s.
  _OPTIONS = pa.ipc.IpcWriteOptions(compression='zstd', use_threads=False)
  _READ_OPTIONS = pa.ipc.IpcReadOptions(use_threads=False)
  _SCHEMA = b'record_batch_coder.schema'

  def encode(self, batch: pa.RecordBatch) -> bytes:
    columns, fields, flattened = [], [], False
    for field, column in zip(batch.schema, batch.columns):
      values = _one_value_per_row(column)
      if values is None:
        columns.append(column)
        fields.append(field)
      else:
        flattened = True
        encoded = arrays.repeated_strings(values)
        values = values if encoded is None else encoded
        columns.append(values)
        fields.append(pa.field(field.name, values.type))
    if flattened:
      batch = pa.RecordBatch.from_arrays(
          columns,
          schema=pa.schema(
              fields,
              metadata={self._SCHEMA: batch.schema.serialize().to_pybytes()}))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema, options=self._OPTIONS) as w:
      w.write_batch(batch)
    return sink.getvalue().to_pybytes()

  def decode(self, data: bytes) -> pa.RecordBatch:
    batch = pa.ipc.open_stream(
        data, options=self._READ_OPTIONS).read_next_batch()
    serialized = (batch.schema.metadata or {}).get(self._SCHEMA)
    if serialized is None:
      return batch
    schema = pa.ipc.read_schema(pa.py_buffer(serialized))
    columns = [
        column if column.type == field.type else _lists_again(
            column, field.type) for field, column in zip(schema, batch.columns)
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)

  def estimate_size(self, batch: pa.RecordBatch) -> int:
    # Runners size elements for their metrics; encoding just to measure
    # would compress every batch once more.
    return batch.nbytes

  def is_deterministic(self) -> bool:
    return False

  def to_type_hint(self):
    return pa.RecordBatch

  def __eq__(self, other):
    return type(self) is type(other)

  def __hash__(self):
    return hash(type(self))


def use_record_batch_coder() -> None:
  """Makes RecordBatchCoder the coder of record-batch PCollections.

  Registered here at import and again by the job when it builds its
  pipeline: another library may register its own coder for the type
  (TFDV registers an uncompressed one), and the last registration wins.
  """
  beam.coders.registry.register_coder(pa.RecordBatch, RecordBatchCoder)


use_record_batch_coder()


class _CleanseFn(beam.DoFn):

  def __init__(self, config: DatasetConfig):
    self._config = config
    self._parser: Optional[RowParser] = None
    self._rows_read = Metrics.counter('cleanse', 'rows_read')
    self._rows_kept = Metrics.counter('cleanse', 'rows_kept')
    self._rows_quarantined = Metrics.counter('cleanse', 'rows_quarantined')
    self._by_reason: Dict[str, Metrics.DelegatingCounter] = {}

  def setup(self):
    self._parser = RowParser(self._config)

  def process(self, chunk: RawChunk):
    assert self._parser is not None  # setup() runs before any process()
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
    return chunks | 'ParseAndCheck' >> beam.ParDo(_CleanseFn(
        self._config)).with_output_types(pa.RecordBatch).with_outputs(
            QUARANTINE_TAG, COUNTS_TAG, main='rows')


class SumCounts(beam.CombineFn):
  """Adds up count dicts into one dict."""

  def create_accumulator(self):
    return collections.Counter()

  def add_input(self, acc, counts):
    acc.update(counts)
    return acc

  def merge_accumulators(self, accs: Iterable[collections.Counter]):
    total: collections.Counter[str] = collections.Counter()
    for acc in accs:
      total.update(acc)
    return total

  def extract_output(self, acc):
    return dict(acc)
