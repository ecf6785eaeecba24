"""Window aggregations over a timestamp: an entity's trailing count, sum, mean,
min or max, configured per dataset under `windows:` (the dataset config).

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

* Beam (pipeline/windows.py, AddWindowFeatures): the cleansed rows of one input (--input, and
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

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from core.config import WindowFeature


def aggregate(window: WindowFeature,
              times: np.ndarray,
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
      key,
      base + np.searchsorted(unique_times, t - window.seconds, side='right'),
      side='left')
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
      result = _range_extreme(
          v, missing_value, left, right,
          np.minimum if window.aggregate == 'min' else np.maximum)
      result[n_values == 0] = np.nan
  out[usable[order]] = result
  return out


def _range_extreme(v: np.ndarray, missing: np.ndarray, left: np.ndarray,
                   right: np.ndarray, op: np.ufunc) -> np.ndarray:
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


def window_value(window: WindowFeature,
                 history_times: Sequence[Any],
                 history_values: Optional[Sequence[Any]],
                 at_time: Any,
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
    history_values = (
        list(history_values) if history_values is not None else [None] *
        len(history_times))
    values = _floats(history_values + [at_value])
  return _finite(aggregate(window, times, values)[-1])


def rows_window_values(
    windows: Sequence[WindowFeature],
    rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Optional[float]]]:
  """Every window of every row, over the rows given (each a {column: typed
  value or None} mapping), grouped by entity."""
  out: List[Dict[str, Optional[float]]] = [{} for _ in rows]
  for w in windows:
    codes: Dict[Any, int] = {}
    entities = np.array([
        -1 if r.get(w.entity) is None else codes.setdefault(
            r.get(w.entity), len(codes)) for r in rows
    ],
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
