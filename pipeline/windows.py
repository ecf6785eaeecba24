"""Window aggregations over a timestamp: an entity's trailing count, sum, mean,
min or max, configured per dataset under `windows:` (pipeline/config.py).

Semantics, the same in the Beam job, at serving time and in trainer.predict:

* For a row with entity e and timestamp t, a window of length w aggregates
  the rows of entity e whose timestamp is in (t - w, t]: the row itself and
  every row at the same second are included, a row exactly w seconds older
  is not.
* A row with a missing entity or a missing timestamp gets a missing value
  (the transform graph imputes it, as for any numeric feature) and is in no
  other row's window.
* count counts rows, whatever their value column. sum, mean, min and max
  skip rows whose value is missing; the sum of no values is 0, and the mean,
  min or max of no values is missing.
* The result is the float column named by the window, carried and scaled
  like any other numeric feature. sum and mean are computed in float64 with
  prefix sums, so two computations over different but overlapping row sets
  (Beam's whole input, a served request's history) agree to float rounding;
  count, min and max agree exactly.

Where the rows come from:

* Beam (AddWindowFeatures): the cleansed rows of one input (--input, and
  separately --test-input), before the split: a row's history is every row of
  its entity in the same input, whichever split either lands in.
* Serving: an instance may carry "history", a list of earlier events of its
  entity ({timestamp column: ..., value column: ...} in the instance's own
  raw format); the window is computed over the history plus the instance.
  Without history the window holds the instance alone (count 1, mean = its
  value), which is what the Beam job gives an entity's first row. A client
  may instead send the window's value itself.
* trainer.predict: the rows of each input file, grouped by entity.

One function, `aggregate`, computes every window value for all of these; it
handles many entities at once (sorted by entity, time and value, then two
binary searches per row: O(n log n)).
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import split
from pipeline.config import DatasetConfig, WindowFeature

# Rows are keyed by a hash of their entity into this many groups: every row of
# an entity lands in one group, and a group holds many entities, so batches
# stay large. One group (about 1/DEFAULT_KEY_BUCKETS of an input) is held in
# a worker's memory at a time.
DEFAULT_KEY_BUCKETS = 256
# Rows per record batch emitted by the window stage.
OUTPUT_BATCH_ROWS = 16384


# ------------------------------------------------------------------ the core


def aggregate(window: WindowFeature, times: np.ndarray,
              values: Optional[np.ndarray] = None,
              entities: Optional[np.ndarray] = None) -> np.ndarray:
  """The window's value for every row (float64, NaN where missing).

  times: seconds (float64, NaN for missing); values: the value column
  (float64, NaN for missing; unused by count); entities: an integer code
  per row, negative for a missing entity (None: all rows are one entity).
  """
  times = np.asarray(times, dtype=np.float64)
  n = len(times)
  out = np.full(n, np.nan)
  if values is None or window.aggregate == 'count':
    values = np.zeros(n)
  values = np.asarray(values, dtype=np.float64)
  if entities is None:
    entities = np.zeros(n, dtype=np.int64)
  entities = np.asarray(entities, dtype=np.int64)
  usable = np.flatnonzero(~np.isnan(times) & (entities >= 0))
  if not len(usable):
    return out
  t, g, v = times[usable], entities[usable], values[usable]
  missing_value = np.isnan(v)
  # Sorted by entity, then time, then value (missing last): a canonical
  # order, so ties always sum in the same order.
  order = np.lexsort((np.where(missing_value, 0.0, v), missing_value, t, g))
  t, g, v, missing_value = t[order], g[order], v[order], missing_value[order]
  # One sortable int64 key per row: entity, then the rank of its time.
  unique_times = np.unique(t)
  stride = np.int64(len(unique_times) + 1)
  base = g * stride
  key = base + np.searchsorted(unique_times, t)
  # [left, right): the rows of the same entity with time in (t - w, t].
  right = np.searchsorted(key, key, side='right')
  left = np.searchsorted(
      key, base + np.searchsorted(unique_times, t - window.seconds,
                                  side='right'), side='left')
  if window.aggregate == 'count':
    result = (right - left).astype(np.float64)
  else:
    present = np.zeros(len(t) + 1, dtype=np.int64)
    np.cumsum(~missing_value, out=present[1:])
    n_values = present[right] - present[left]
    if window.aggregate in ('sum', 'mean'):
      sums = np.zeros(len(t) + 1)
      np.cumsum(np.where(missing_value, 0.0, v), out=sums[1:])
      total = sums[right] - sums[left]
      if window.aggregate == 'sum':
        result = np.where(n_values > 0, total, 0.0)
      else:
        with np.errstate(invalid='ignore', divide='ignore'):
          result = np.where(n_values > 0, total / np.maximum(n_values, 1),
                            np.nan)
    else:
      result = _range_extreme(v, missing_value, left, right,
                              np.minimum if window.aggregate == 'min'
                              else np.maximum)
      result[n_values == 0] = np.nan
  out[usable[order]] = result
  return out


def _range_extreme(v: np.ndarray, missing: np.ndarray, left: np.ndarray,
                   right: np.ndarray, op) -> np.ndarray:
  """op (np.minimum or np.maximum) over v[left:right] for each row, missing
  values skipped (+-inf there): a sparse table, one level at a time."""
  fill = np.inf if op is np.minimum else -np.inf
  level = np.where(missing, fill, v)
  lengths = right - left  # >= 1: a row is in its own window
  k = np.floor(np.log2(lengths)).astype(np.int64)
  result = np.empty(len(v))
  span = 1
  for j in range(int(k.max()) + 1):
    rows = np.flatnonzero(k == j)
    if len(rows):
      result[rows] = op(level[left[rows]], level[right[rows] - span])
    if j < int(k.max()):
      level = op(level[:len(level) - span], level[span:])
      span *= 2
  return result


def window_value(window: WindowFeature, history_times: Sequence[Any],
                 history_values: Optional[Sequence[Any]], at_time: Any,
                 at_value: Any = None) -> Optional[float]:
  """One row's window value from its entity's other rows (serving).

  history_times / history_values: the other rows' timestamps (epoch
  seconds) and values, None where missing; at_time / at_value: the row's
  own. None when the value is missing.
  """
  if at_time is None:
    return None
  times = _floats(list(history_times) + [at_time])
  values = None
  if window.aggregate != 'count':
    history_values = (list(history_values) if history_values is not None
                      else [None] * len(history_times))
    values = _floats(history_values + [at_value])
  return _finite(aggregate(window, times, values)[-1])


def rows_window_values(windows: Sequence[WindowFeature],
                       rows: Sequence[Mapping[str, Any]]
                      ) -> List[Dict[str, Optional[float]]]:
  """Every window of every row, over the rows given (each a {column: typed
  value or None} mapping), grouped by entity."""
  out = [{} for _ in rows]
  for w in windows:
    codes: Dict[Any, int] = {}
    entities = np.array([
        -1 if r.get(w.entity) is None else
        codes.setdefault(r.get(w.entity), len(codes)) for r in rows],
                        dtype=np.int64)
    times = _floats([r.get(w.timestamp) for r in rows])
    values = (_floats([r.get(w.value) for r in rows]) if w.value else None)
    for row, value in zip(out, aggregate(w, times, values, entities)):
      row[w.name] = _finite(value)
  return out


def _floats(items: Sequence[Any]) -> np.ndarray:
  return np.array([np.nan if x is None else float(x) for x in items],
                  dtype=np.float64)


def _finite(value: float) -> Optional[float]:
  """A float64 result as the float32 the column carries; None if missing
  (or beyond float32)."""
  if not np.isfinite(value):
    return None
  with np.errstate(over='ignore'):
    value = float(np.float32(value))
  return value if np.isfinite(value) else None


# ------------------------------------------------------------ record batches


def _single_values(column: pa.Array) -> Tuple[np.ndarray, pa.Array]:
  """(row has a value, the first value of each such row) of a list column."""
  if not (pa.types.is_list(column.type) or
          pa.types.is_large_list(column.type)):
    present = np.asarray(column.is_valid())
    return present, column.filter(pa.array(present))
  lengths = pc.list_value_length(column).fill_null(0).to_numpy(
      zero_copy_only=False).astype(np.int64)
  present = lengths > 0
  flat = column.flatten()
  starts = np.cumsum(lengths) - lengths
  return present, flat.take(pa.array(starts[present]))


def _float_column(column: pa.Array) -> np.ndarray:
  present, values = _single_values(column)
  out = np.full(len(column), np.nan)
  out[present] = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
  return out


def _entity_codes(column: pa.Array) -> np.ndarray:
  present, values = _single_values(column)
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
      pa.array(offsets), pa.array(values[present], type=pa.float32()),
      mask=pa.array(~present))


def window_columns(batch: pa.RecordBatch, windows: Sequence[WindowFeature]
                  ) -> Dict[str, np.ndarray]:
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


def fill_windows(batch: pa.RecordBatch, windows: Sequence[WindowFeature],
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
    present, _ = _single_values(column)
    if not present.all():
      absent = batch.filter(pa.array(~present))
      yield beam.pvalue.TaggedOutput(self.UNKEYED, with_columns(
          absent, {n: np.full(absent.num_rows, np.nan)
                   for n in self._names}))
      batch = batch.filter(pa.array(present))
      if not batch.num_rows:
        return
      column = batch.column(self._entity)
    # split's value hashes depend on the value alone (no Python hash seed):
    # the same entity goes to the same bucket on every worker.
    hashes = split._column_hashes(column)  # pylint: disable=protected-access
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
    order = np.argsort(split.row_positions(batch, 0), kind='stable')
    batch = batch.take(pa.array(order))
    for start in range(0, batch.num_rows, OUTPUT_BATCH_ROWS):
      yield batch.slice(start, OUTPUT_BATCH_ROWS)


class AddWindowFeatures(beam.PTransform):
  """Cleansed record batches -> the same rows with every window column filled.

  One group-by per entity column: rows keyed by a hash bucket of the entity,
  grouped, and each group's windows computed at once by `aggregate`. Add it
  only when the config has windows; it changes nothing else in a row.
  """

  def __init__(self, config: DatasetConfig,
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
      computed = (keyed.keyed
                  | f'Group[{entity}]' >> beam.GroupByKey()
                  | f'Compute[{entity}]' >> beam.ParDo(
                      _ComputeWindowsFn(windows)).with_output_types(
                          pa.RecordBatch))
      batches = ((computed, unkeyed)
                 | f'Merge[{entity}]' >> beam.Flatten().with_output_types(
                     pa.RecordBatch))
    return batches
