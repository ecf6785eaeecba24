"""Evaluation: binary classification metrics, metrics.json and a console table.

The metrics are computed here in NumPy from the model's probabilities rather
than taken from Keras' streaming metrics: those approximate AUC with a fixed
grid of thresholds, while the figures reported for the model (and compared
against the quality bar) should be exact and reproducible by anyone holding
the predictions.
"""

import json
import math
from typing import Any, Dict, Iterable, List, Mapping, Tuple

import numpy as np
import tensorflow as tf

METRICS_FILE = 'metrics.json'
_EPS = 1e-7  # clip for log loss, as Keras does


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve, ties counted as half (Mann-Whitney U)."""
  labels = np.asarray(labels).astype(bool)
  scores = np.asarray(scores, dtype=np.float64)
  n_pos = int(labels.sum())
  n_neg = labels.size - n_pos
  if n_pos == 0 or n_neg == 0:
    return float('nan')
  ranks = _average_ranks(scores)
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) /
               (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks, tied values sharing the mean of their ranks."""
  order = np.argsort(x, kind='mergesort')
  sorted_x = x[order]
  # Start index of each run of equal values.
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], x.size]
  mean_rank = (starts + ends + 1) / 2.0  # mean of (start+1 .. end)
  ranks = np.empty(x.size, dtype=np.float64)
  ranks[order] = np.repeat(mean_rank, ends - starts)
  return ranks


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the precision-recall curve as average precision.

  AP = sum over distinct score thresholds of (R_k - R_{k-1}) * P_k, the
  step-wise (not interpolated) area; tied scores form one threshold.
  """
  labels = np.asarray(labels).astype(bool)
  scores = np.asarray(scores, dtype=np.float64)
  n_pos = int(labels.sum())
  if n_pos == 0:
    return float('nan')
  order = np.argsort(-scores, kind='mergesort')
  s, y = scores[order], labels[order]
  tp = np.cumsum(y)
  fp = np.cumsum(~y)
  # Last index of each run of equal scores: a threshold admits the whole run.
  last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
  tp, fp = tp[last], fp[last]
  precision = tp / (tp + fp)
  recall = tp / n_pos
  recall_step = np.diff(np.r_[0.0, recall])
  return float(np.sum(recall_step * precision))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
  y = np.asarray(labels, dtype=np.float64)
  p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1 - _EPS)
  return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _ratio(a: int, b: int) -> float:
  return float(a / b) if b else 0.0


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray,
                   threshold: float) -> Dict[str, Any]:
  """All metrics of one split; positive predicted when p >= threshold."""
  y = np.asarray(labels).reshape(-1).astype(bool)
  p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
  if y.size != p.size:
    raise ValueError(f'{y.size} labels but {p.size} predictions')
  pred = p >= threshold
  tp = int(np.sum(pred & y))
  fp = int(np.sum(pred & ~y))
  fn = int(np.sum(~pred & y))
  tn = int(np.sum(~pred & ~y))
  precision = _ratio(tp, tp + fp)
  recall = _ratio(tp, tp + fn)
  f1 = _ratio(2 * precision * recall, precision + recall) if (
      precision + recall) else 0.0
  return {
      'rows': int(y.size),
      'accuracy': _ratio(tp + tn, y.size),
      'roc_auc': roc_auc(y, p),
      'pr_auc': pr_auc(y, p),
      'precision': precision,
      'recall': recall,
      'f1': f1,
      'log_loss': log_loss(y, p),
      'base_rate': _ratio(int(y.sum()), y.size),
      'predicted_positive_rate': _ratio(int(pred.sum()), y.size),
      'threshold': float(threshold),
      'confusion_matrix': {'tn': tn, 'fp': fp, 'fn': fn, 'tp': tp},
  }


def predict_dataset(model, dataset: tf.data.Dataset
                   ) -> Tuple[np.ndarray, np.ndarray]:
  """(labels, probabilities) over a finite (features, label) dataset.

  Labels are collected from the same batches the model scores, so they line
  up whatever the dataset's order.
  """

  # One trace per call: the signature comes from the dataset's element spec
  # (batch dimension None), so a short last batch does not retrace.
  step = tf.function(lambda x: model(x, training=False),
                     input_signature=[dataset.element_spec[0]])

  labels, probs = [], []
  for x, y in dataset:
    probs.append(step(x).numpy().reshape(-1))
    labels.append(y.numpy().reshape(-1))
  if not labels:
    return np.zeros(0), np.zeros(0)
  return np.concatenate(labels), np.concatenate(probs)


# ----------------------------------------------------------------- reporting

_TABLE_ROWS = [
    ('rows', 'rows', '{:,d}'),
    ('accuracy', 'accuracy', '{:.4f}'),
    ('roc_auc', 'ROC AUC', '{:.4f}'),
    ('pr_auc', 'PR AUC', '{:.4f}'),
    ('precision', 'precision', '{:.4f}'),
    ('recall', 'recall', '{:.4f}'),
    ('f1', 'F1', '{:.4f}'),
    ('log_loss', 'log loss', '{:.4f}'),
    ('base_rate', 'base rate', '{:.4f}'),
    ('threshold', 'threshold', '{:.2f}'),
]


def _fmt(fmt: str, value: Any) -> str:
  if isinstance(value, float) and math.isnan(value):
    return 'n/a'
  return fmt.format(value)


def format_table(by_split: Mapping[str, Mapping[str, Any]]) -> str:
  """A fixed-width table, one column per split, confusion matrix below."""
  splits = list(by_split)
  width = max(12, max((len(s) for s in splits), default=0) + 2)
  lines = ['metric'.ljust(12) + ''.join(s.rjust(width) for s in splits)]
  for key, title, fmt in _TABLE_ROWS:
    lines.append(title.ljust(12) + ''.join(
        _fmt(fmt, by_split[s][key]).rjust(width) for s in splits))
  for s in splits:
    cm = by_split[s]['confusion_matrix']
    lines.append(f'confusion matrix [{s}] (rows: true 0/1, columns: '
                 f'predicted 0/1): [[{cm["tn"]}, {cm["fp"]}], '
                 f'[{cm["fn"]}, {cm["tp"]}]]')
  return '\n'.join(lines)


def _json_safe(value: Any) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  return value


def write_metrics(path: str, doc: Mapping[str, Any]) -> None:
  """Writes metrics.json (NaN, e.g. AUC of a one-class split, as null)."""
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(json.dumps(_json_safe(dict(doc)), indent=2, sort_keys=True) + '\n')


def read_metrics(path: str) -> Dict[str, Any]:
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def evaluate_splits(model, datasets: Mapping[str, tf.data.Dataset],
                    threshold: float) -> Dict[str, Dict[str, Any]]:
  out = {}
  for name, ds in datasets.items():
    labels, probs = predict_dataset(model, ds)
    out[name] = binary_metrics(labels, probs, threshold)
  return out


def splits_in_order(names: Iterable[str]) -> List[str]:
  order = {'train': 0, 'eval': 1, 'test': 2}
  return sorted(names, key=lambda n: (order.get(n, 3), n))
