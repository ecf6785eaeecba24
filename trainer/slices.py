"""Per-slice metrics: a binary model's metrics per value of raw columns.

The transformed TFRecords hold no raw column values, so the slices are
computed from the raw rows the preprocess job writes with --write-raw
(DIR/raw/{split}-*.tfrecord.gz), scored through the exported SavedModel's
serving_default signature. That is the route a served request takes (raw
tf.Example in, the export's own transform graph and threshold), and the
overall metrics of those raw rows are recorded next to the slices so they can
be checked against the metrics of the transformed rows. Which raw columns
slice the metrics is the config's `model: slices` list; numeric columns are
cut into `slice_buckets` quantile buckets of the eval split's values, string
columns show their MAX_CATEGORIES most common values, the rest as "(other)".
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from core import features as raw_features
from core.config import DatasetConfig
from core.layout import ExportDir
from core.layout import PreprocessOutput
from trainer import evaluate

MAX_CATEGORIES = 15  # larger slices shown one by one, the rest as "(other)"
OTHER = '(other)'
MISSING = '(missing)'
_BATCH = 4096


def _raw_files(preprocess_dir: str, split: str) -> List[str]:
  return PreprocessOutput(preprocess_dir).raw_files(split)


def _score_raw(
    serve: Any, config: DatasetConfig, files: Sequence[str],
    columns: Sequence[str]
) -> Tuple[np.ndarray, np.ndarray, Dict[str, np.ndarray]]:
  """(labels, probabilities, raw column values) of raw tf.Example rows,
  scored by `serve`, an export's serving_default signature."""
  spec = raw_features.raw_feature_spec(config, include_label=True)
  label_col = config.label.column
  wanted = [label_col] + [c for c in columns if c != label_col]
  prob_batches: List[np.ndarray] = []
  values: Dict[str, List[np.ndarray]] = {c: [] for c in wanted}
  ds = tf.data.TFRecordDataset(
      list(files), compression_type='GZIP').batch(_BATCH)
  for batch in ds:
    out = serve(**{ExportDir.EXAMPLES_INPUT: batch})
    prob_batches.append(out[ExportDir.PROBABILITIES].numpy().reshape(-1))
    parsed = tf.io.parse_example(batch, {c: spec[c] for c in wanted})
    for c in wanted:
      values[c].append(_dense(parsed[c], _is_string(config, c)))
  raw_labels = np.concatenate(values.pop(label_col))
  aliases = config.label.aliases
  strings = [
      aliases.get(v.strip(), v.strip()) if v is not None else None
      for v in raw_labels
  ]
  labels = np.array([s == config.label.positive for s in strings])
  known = np.array([s in config.label.classes for s in strings])
  probs = np.concatenate(prob_batches)
  out_values = {c: np.concatenate(v)[known] for c, v in values.items()}
  return labels[known], probs[known], out_values


def _is_string(config: DatasetConfig, name: str) -> bool:
  column = config.column(name)
  return getattr(column, 'raw_type', column.type) == 'string'


def _dense(sparse: tf.SparseTensor, is_string: bool) -> np.ndarray:
  """One value per row (the first of a list); None (strings) or NaN
  (numbers) where missing."""
  n = int(sparse.dense_shape[0])
  indices = sparse.indices.numpy()
  first = np.r_[True, indices[1:,
                              0] != indices[:-1,
                                            0]] if len(indices) else np.zeros(
                                                0, bool)
  rows = indices[first, 0]
  vals = sparse.values.numpy()[first]
  if is_string:
    out = np.full(n, None, dtype=object)
    out[rows] = [v.decode('utf-8', 'replace') for v in vals]
  else:
    out = np.full(n, np.nan, dtype=np.float64)
    out[rows] = vals.astype(np.float64)
  return out


def numeric_edges(values: np.ndarray, buckets: int) -> List[float]:
  """Inner cut points: the distinct quantiles at 1/buckets, 2/buckets, ..."""
  v = values[np.isfinite(values)]
  if not v.size:
    return []
  qs = np.quantile(v, [i / buckets for i in range(1, buckets)])
  return sorted({float(q) for q in qs if v.min() < q <= v.max()})


def _fmt_number(x: float) -> str:
  return f'{x:g}'


def numeric_slice_names(values: np.ndarray,
                        edges: Sequence[float]) -> np.ndarray:
  """'[a, b)' bucket names (first '< b', last '>= a'); missing separately."""
  names = []
  bounds = list(edges)
  labels = []
  for i in range(len(bounds) + 1):
    if not bounds:
      labels.append('all')
    elif i == 0:
      labels.append(f'< {_fmt_number(bounds[0])}')
    elif i == len(bounds):
      labels.append(f'>= {_fmt_number(bounds[-1])}')
    else:
      labels.append(f'[{_fmt_number(bounds[i - 1])}, '
                    f'{_fmt_number(bounds[i])})')
  idx = np.searchsorted(np.asarray(bounds), values, side='right')
  for v, i in zip(values, idx, strict=True):
    names.append(MISSING if not np.isfinite(v) else labels[i])
  return np.array(names, dtype=object)


def categorical_slice_names(values: np.ndarray,
                            config: DatasetConfig,
                            keep: Optional[Sequence[str]] = None) -> np.ndarray:
  """Trimmed values, missing tokens as one slice, rare ones as '(other)'."""
  missing = set(config.missing_values)
  names = np.array([
      MISSING if v is None or v.strip() in missing else v.strip()
      for v in values
  ],
                   dtype=object)
  if keep is not None:
    kept = set(keep)
    names = np.array([n if n in kept or n == MISSING else OTHER for n in names],
                     dtype=object)
  return names


def _slice_row(name: str, y: np.ndarray, p: np.ndarray,
               threshold: float) -> Dict[str, Any]:
  m = evaluate.binary_metrics(y, p, threshold)
  return {
      'slice': name,
      'rows': m['rows'],
      'base_rate': m['base_rate'],
      'predicted_positive_rate': m['predicted_positive_rate'],
      'accuracy': m['accuracy'],
      'precision': m['precision'],
      'recall': m['recall'],
      'f1': m['f1'],
      'roc_auc': m['roc_auc'],
  }


def slice_metrics(export_dir: str, preprocess_dir: str, config: DatasetConfig,
                  columns: Sequence[str], buckets: int, threshold: float,
                  splits: Sequence[str]) -> Dict[str, Any]:
  """Metrics per value of each slice column, per split, at `threshold`.

  Returns {'available': False, 'reason': ...} when there is nothing to slice
  (no slices configured, or no raw rows), else
  {'available': True, 'columns': [...], 'source': ..., 'splits': {split:
  {'overall': metrics of all raw rows, 'columns': {column: [slice rows]}}}}.
  """
  columns = list(columns)
  if not columns:
    return {
        'available': False,
        'columns': [],
        'reason': 'no slice columns configured (model: slices)'
    }
  files = {s: _raw_files(preprocess_dir, s) for s in splits}
  files = {s: f for s, f in files.items() if f}
  if not files:
    return {
        'available': False,
        'columns': columns,
        'reason':
            f'no raw rows in {PreprocessOutput(preprocess_dir).path(PreprocessOutput.RAW_DIR)}'
            ' (run the preprocess job with --write-raw)'
    }
  loaded = tf.saved_model.load(export_dir)
  serve = loaded.signatures[ExportDir.DEFAULT_SIGNATURE]
  scored = {s: _score_raw(serve, config, f, columns) for s, f in files.items()}
  reference = scored['eval' if 'eval' in scored else next(iter(scored))]
  out: Dict[str, Any] = {
      'available': True,
      'columns': columns,
      'source': 'raw rows (preprocess --write-raw) scored by the export',
      'buckets': {},
      'splits': {}
  }
  # Bucket edges and the categories shown come from one split (eval), so the
  # slices of every split are the same.
  # column: ('string', the values kept (None: all), their order) or
  # ('number', the bucket edges, None).
  plan: Dict[str, Tuple[str, Any, Optional[List[str]]]] = {}
  for c in columns:
    if _is_string(config, c):
      names = categorical_slice_names(reference[2][c], config)
      uniq, counts = np.unique(names[names != MISSING], return_counts=True)
      top = [
          str(u) for u, _ in sorted(
              zip(uniq, counts, strict=True), key=lambda t: (-t[1], t[0]))
      ]
      plan[c] = ('string',
                 top[:MAX_CATEGORIES] if len(top) > MAX_CATEGORIES else None,
                 top[:MAX_CATEGORIES])
    else:
      edges = numeric_edges(reference[2][c], buckets)
      plan[c] = ('number', edges, None)
      out['buckets'][c] = edges
  for split, (y, p, values) in scored.items():
    per_column = {}
    for c in columns:
      kind, arg, order = plan[c]
      if kind == 'string':
        names = categorical_slice_names(values[c], config, arg)
      else:
        names = numeric_slice_names(values[c], arg)
      rows = []
      for name in _slice_order(names, kind, arg, order):
        mask = names == name
        rows.append(_slice_row(str(name), y[mask], p[mask], threshold))
      per_column[c] = rows
    out['splits'][split] = {
        'overall': evaluate.binary_metrics(y, p, threshold),
        'columns': per_column
    }
  return out


def _slice_order(names: np.ndarray, kind: str, edges, order) -> List[str]:
  """Numeric buckets low to high; categories in the reference split's order
  (most rows first), then any it lacks; '(other)' and '(missing)' last."""
  present = set(names.tolist())
  if kind == 'number':
    # One probe value per bucket, lowest first, then missing.
    probes = ([edges[0] - 1.0] + list(edges)) if edges else [0.0]
    ordered = list(
        dict.fromkeys(
            numeric_slice_names(np.array(probes + [np.nan]), edges).tolist()))
  else:
    uniq, counts = np.unique(names, return_counts=True)
    by_count = [
        str(u) for u, _ in sorted(
            zip(uniq, counts, strict=True), key=lambda t: (-t[1], t[0]))
    ]
    ordered = list(order) + [n for n in by_count if n not in order]
    ordered = [o for o in ordered if o not in (OTHER, MISSING)
              ] + [OTHER, MISSING]
  return [o for o in ordered if o in present]
