"""Window aggregations in the Beam job: record batches keyed by entity.

What a window is, and the one function that computes every window value
(`aggregate`), are in core/windows.py; this module applies it to the
cleansed record batches of one input, before the split.
"""

from typing import Dict, List, Mapping, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import hashing
from core.config import DatasetConfig
from core.config import WindowFeature
from core.windows import aggregate

# Rows are keyed by a hash of their entity into this many groups: every row of
# an entity lands in one group, and a group holds many entities, so batches
# stay large. One group (about 1/DEFAULT_KEY_BUCKETS of an input) is held in
# a worker's memory at a time.
DEFAULT_KEY_BUCKETS = 256
# Rows per record batch emitted by the window stage.
OUTPUT_BATCH_ROWS = 16384

# ------------------------------------------------------------ record batches


def single_values(column: pa.Array) -> Tuple[np.ndarray, pa.Array]:
  """(row has a value, the first value of each such row) of a list column."""
  if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
    present = np.asarray(column.is_valid())
    return present, column.filter(pa.array(present))
  lengths = pc.list_value_length(column).fill_null(0).to_numpy(
      zero_copy_only=False).astype(np.int64)
  present = lengths > 0
  flat = column.flatten()
  starts = np.cumsum(lengths) - lengths
  return present, flat.take(pa.array(starts[present]))


def _float_column(column: pa.Array) -> np.ndarray:
  present, values = single_values(column)
  out = np.full(len(column), np.nan)
  out[present] = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
  return out


def _entity_codes(column: pa.Array) -> np.ndarray:
  present, values = single_values(column)
  codes = np.full(len(column), -1, dtype=np.int64)
  if len(values):
    codes[present] = pc.dictionary_encode(values).indices.to_numpy(
        zero_copy_only=False)
  return codes


def _derived_array(values: np.ndarray) -> pa.Array:
  """float64 results (NaN missing) -> the cleansed layout, large_list<float>:
  [v] per row with a value, null otherwise. Values beyond float32 are
  missing."""
  with np.errstate(over='ignore', invalid='ignore'):
    values = values.astype(np.float32)
  present = np.isfinite(values)
  offsets = np.zeros(len(values) + 1, dtype=np.int64)
  np.cumsum(present, out=offsets[1:])
  return pa.LargeListArray.from_arrays(
      pa.array(offsets),
      pa.array(values[present], type=pa.float32()),
      mask=pa.array(~present))


def window_columns(batch: pa.RecordBatch,
                   windows: Sequence[WindowFeature]) -> Dict[str, np.ndarray]:
  """Each window's values (float64, NaN missing) over the rows of `batch`."""
  out = {}
  codes = {}
  for w in windows:
    if w.entity not in codes:
      codes[w.entity] = _entity_codes(batch.column(w.entity))
    times = _float_column(batch.column(w.timestamp))
    values = _float_column(batch.column(w.value)) if w.value else None
    out[w.name] = aggregate(w, times, values, codes[w.entity])
  return out


def with_columns(batch: pa.RecordBatch,
                 columns: Mapping[str, np.ndarray]) -> pa.RecordBatch:
  """`batch` with the named (derived) columns replaced by these values."""
  arrays = list(batch.columns)
  for name, values in columns.items():
    arrays[batch.schema.get_field_index(name)] = _derived_array(values)
  return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def fill_windows(batch: pa.RecordBatch,
                 windows: Sequence[WindowFeature],
                 only_missing: bool = False) -> pa.RecordBatch:
  """Computes every window over the rows of `batch` (one in-memory table:
  serving data for the skew check). With only_missing, values already in the
  batch (a request log records what the model got) are kept."""
  columns = window_columns(batch, windows)
  if only_missing:
    for name, computed in columns.items():
      given = _float_column(batch.column(name))
      columns[name] = np.where(np.isnan(given), computed, given)
  return with_columns(batch, columns)


# ---------------------------------------------------------------------- Beam


def _concat(batches: Sequence[pa.RecordBatch]) -> pa.RecordBatch:
  if len(batches) == 1:
    return batches[0]
  table = pa.Table.from_batches(batches).combine_chunks()
  return table.to_batches(max_chunksize=table.num_rows)[0] if (
      table.num_rows) else batches[0].slice(0, 0)


class _KeyByEntityFn(beam.DoFn):
  """A batch -> (entity bucket, the batch's rows of that bucket) pairs; rows
  without an entity go out untouched under UNKEYED, their windows missing."""

  UNKEYED = 'unkeyed'

  def __init__(self, entity: str, windows: Sequence[WindowFeature],
               buckets: int):
    self._entity = entity
    self._names = [w.name for w in windows]
    self._buckets = buckets

  def process(self, batch: pa.RecordBatch):
    if not batch.num_rows:
      return
    column = batch.column(self._entity)
    present, _ = single_values(column)
    if not present.all():
      absent = batch.filter(pa.array(~present))
      yield beam.pvalue.TaggedOutput(
          self.UNKEYED,
          with_columns(
              absent,
              {n: np.full(absent.num_rows, np.nan) for n in self._names}))
      batch = batch.filter(pa.array(present))
      if not batch.num_rows:
        return
      column = batch.column(self._entity)
    # split's value hashes depend on the value alone (no Python hash seed):
    # the same entity goes to the same bucket on every worker.
    hashes = hashing.column_hashes(column)
    buckets = (hashes % np.uint64(self._buckets)).astype(np.int64)
    order = np.argsort(buckets, kind='stable')
    ordered = batch.take(pa.array(order))
    sorted_buckets = buckets[order]
    edges = np.flatnonzero(np.diff(sorted_buckets)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(order)]])
    for start, end in zip(starts.tolist(), ends.tolist()):
      yield int(sorted_buckets[start]), ordered.slice(start, end - start)


class _ComputeWindowsFn(beam.DoFn):
  """(bucket, batches) -> record batches with the bucket's windows filled."""

  def __init__(self, windows: Sequence[WindowFeature]):
    self._windows = list(windows)

  def process(self, element):
    _, batches = element
    batch = _concat(list(batches))
    batch = with_columns(batch, window_columns(batch, self._windows))
    # Rows in an order that depends on their values alone, not on the order
    # the group's batches arrived in: the same input gives the same batches.
    order = np.argsort(hashing.row_positions(batch, 0), kind='stable')
    batch = batch.take(pa.array(order))
    for start in range(0, batch.num_rows, OUTPUT_BATCH_ROWS):
      yield batch.slice(start, OUTPUT_BATCH_ROWS)


class AddWindowFeatures(beam.PTransform):
  """Cleansed record batches -> the same rows with every window column filled.

  One group-by per entity column: rows keyed by a hash bucket of the entity,
  grouped, and each group's windows computed at once by `aggregate`. Add it
  only when the config has windows; it changes nothing else in a row.
  """

  def __init__(self,
               config: DatasetConfig,
               key_buckets: int = DEFAULT_KEY_BUCKETS):
    super().__init__()
    self._windows = list(config.windows)
    self._buckets = key_buckets

  def expand(self, batches):
    by_entity: Dict[str, List[WindowFeature]] = {}
    for w in self._windows:
      by_entity.setdefault(w.entity, []).append(w)
    for entity, windows in by_entity.items():
      keyed = batches | f'KeyBy[{entity}]' >> beam.ParDo(
          _KeyByEntityFn(entity, windows, self._buckets)).with_outputs(
              _KeyByEntityFn.UNKEYED, main='keyed')
      keyed.keyed.element_type = beam.typehints.KV[int, pa.RecordBatch]
      unkeyed = keyed[_KeyByEntityFn.UNKEYED]
      unkeyed.element_type = pa.RecordBatch
      computed = (
          keyed.keyed
          | f'Group[{entity}]' >> beam.GroupByKey()
          | f'Compute[{entity}]' >> beam.ParDo(
              _ComputeWindowsFn(windows)).with_output_types(pa.RecordBatch))
      batches = ((computed, unkeyed)
                 | f'Merge[{entity}]' >> beam.Flatten().with_output_types(
                     pa.RecordBatch))
    return batches
