"""Evaluation: binary classification metrics, metrics.json and a console table.

The metrics are computed here in NumPy from the model's probabilities rather
than taken from Keras' streaming metrics: those approximate AUC with a fixed
grid of thresholds, while the figures reported for the model (and compared
against the quality bar) should be exact and reproducible by anyone holding
the predictions.
"""

import json
import math
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TYPE_CHECKING,
)

import numpy as np

if TYPE_CHECKING:
  import tensorflow as tf

# TensorFlow is imported by the functions that use it: the report's figures
# are drawn in a child interpreter (trainer/plots.py) that needs the curves
# here and should not spend seconds importing TensorFlow.

LOG_LOSS_EPS = 1e-7  # clip for log loss, as Keras does


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve, ties counted as half (Mann-Whitney U)."""
  labels = np.asarray(labels).astype(bool)
  scores = np.asarray(scores, dtype=np.float64)
  n_pos = int(labels.sum())
  n_neg = labels.size - n_pos
  if n_pos == 0 or n_neg == 0:
    return float('nan')
  ranks = _average_ranks(scores)
  return float(
      (ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


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


def _operating_points(labels: np.ndarray, scores: np.ndarray):
  """(thresholds, tp, fp) for "positive when score >= t", t from high to low.

  One point per distinct score: a threshold admits every tied score at once.
  """
  labels = np.asarray(labels).reshape(-1).astype(bool)
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  order = np.argsort(-scores, kind='mergesort')
  s, y = scores[order], labels[order]
  last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1].astype(int)
  tp = np.cumsum(y)[last] if s.size else np.zeros(0)
  fp = np.cumsum(~y)[last] if s.size else np.zeros(0)
  return s[last], tp.astype(np.int64), fp.astype(np.int64)


def roc_curve(labels, scores) -> Dict[str, np.ndarray]:
  """False and true positive rates at every distinct threshold, from (0, 0)."""
  t, tp, fp = _operating_points(labels, scores)
  y = np.asarray(labels).reshape(-1).astype(bool)
  n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
  return {
      'fpr': np.r_[0.0, fp / n_neg],
      'tpr': np.r_[0.0, tp / n_pos],
      'thresholds': np.r_[np.inf, t]
  }


def pr_curve(labels, scores) -> Dict[str, np.ndarray]:
  """Precision and recall at every distinct threshold, highest first."""
  t, tp, fp = _operating_points(labels, scores)
  n_pos = max(int(np.sum(np.asarray(labels).astype(bool))), 1)
  return {
      'precision': tp / np.maximum(tp + fp, 1),
      'recall': tp / n_pos,
      'thresholds': t
  }


def calibration(labels, probabilities, bins: int = 10) -> Dict[str, List]:
  """Reliability diagram data: equal-width probability bins with their
  mean prediction, observed positive rate and row count (empty bins left out).
  """
  y = np.asarray(labels, dtype=np.float64).reshape(-1)
  p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
  idx = np.minimum((p * bins).astype(int), bins - 1)
  out: Dict[str, List[float]] = {
      'mean_predicted': [],
      'observed_rate': [],
      'rows': [],
      'bin': []
  }
  for b in range(bins):
    mask = idx == b
    if mask.any():
      out['bin'].append(b)
      out['mean_predicted'].append(float(p[mask].mean()))
      out['observed_rate'].append(float(y[mask].mean()))
      out['rows'].append(int(mask.sum()))
  return out


def expected_calibration_error(labels, probabilities, bins: int = 10) -> float:
  c = calibration(labels, probabilities, bins)
  n = sum(c['rows'])
  if not n:
    return float('nan')
  return float(
      sum(r * abs(m - o) for r, m, o in zip(c['rows'], c['mean_predicted'],
                                            c['observed_rate'])) / n)


THRESHOLD_OBJECTIVES = ('max_f1', 'precision', 'recall', 'fixed')


def choose_threshold(labels,
                     scores,
                     objective: str,
                     target: float = 0.8,
                     fixed: float = 0.5) -> Dict[str, Any]:
  """The decision threshold for `objective`, from one split's predictions.

    max_f1     the score at which F1 peaks (ties: the higher threshold)
    precision  the lowest threshold whose precision is >= target, i.e. the
               most recall that keeps that precision
    recall     the highest threshold whose recall is >= target, i.e. the most
               precision that keeps that recall
    fixed      `fixed`, unchanged

  Positive means score >= threshold, so each candidate is one of the scores.
  When no threshold reaches a precision target, the one with the highest
  precision is used and `reached` is False. Returns the threshold with the
  precision, recall and F1 it gives on these predictions.
  """
  if objective not in THRESHOLD_OBJECTIVES:
    raise ValueError(f'unknown threshold objective {objective!r}')
  labels = np.asarray(labels).reshape(-1).astype(bool)
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  result = {
      'objective': objective,
      'target': None if objective in ('max_f1', 'fixed') else target,
      'reached': True
  }
  t, tp, fp = _operating_points(labels, scores)
  n_pos = int(labels.sum())
  if objective == 'fixed' or not t.size or n_pos == 0:
    threshold = fixed
  else:
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / n_pos
    f1 = np.where(
        precision + recall > 0,
        2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    if objective == 'max_f1':
      i = int(np.argmax(f1))  # first maximum: the highest such threshold
    elif objective == 'precision':
      ok = np.flatnonzero(precision >= target)
      if ok.size:
        i = int(ok[-1])
      else:
        i, result['reached'] = int(np.argmax(precision)), False
    else:
      i = int(np.flatnonzero(recall >= target)[0])  # recall 1 at the end
    threshold = float(t[i])
  # Keep it a usable probability threshold for the export's (0, 1) check.
  threshold = float(min(max(threshold, 1e-6), 1.0 - 1e-6))
  m = binary_metrics(labels, scores, threshold)
  result.update({
      'threshold': threshold,
      'precision': m['precision'],
      'recall': m['recall'],
      'f1': m['f1']
  })
  return result


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
  y = np.asarray(labels, dtype=np.float64)
  p = np.clip(
      np.asarray(probabilities, dtype=np.float64), LOG_LOSS_EPS,
      1 - LOG_LOSS_EPS)
  return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _ratio(a: float, b: float) -> float:
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
  f1 = _ratio(2 * precision * recall, precision + recall) if (precision +
                                                              recall) else 0.0
  return {
      'rows': int(y.size),
      'accuracy': _ratio(tp + tn, y.size),
      'roc_auc': roc_auc(y, p),
      'pr_auc': pr_auc(y, p),
      'precision': precision,
      'recall': recall,
      'f1': f1,
      'log_loss': log_loss(y, p),
      # Threshold-free: mean |predicted - observed| over ten probability bins.
      'calibration_error': expected_calibration_error(y, p),
      'base_rate': _ratio(int(y.sum()), y.size),
      'predicted_positive_rate': _ratio(int(pred.sum()), y.size),
      'threshold': float(threshold),
      'confusion_matrix': {
          'tn': tn,
          'fp': fp,
          'fn': fn,
          'tp': tp
      },
  }


class ScoringSteps:
  """A model's call, traced once for each spec of features it is given.

  Everything in a process that scores with one model shares the traces: the
  splits whose batches have one spec (the usual case: one transformed
  schema), and the export, whose transform graph gives the model the same
  spec. A trace of the model's call took 0.4-0.5 s.
  """

  def __init__(self, model):
    self.model = model
    self._steps: List[Tuple[Any, Callable]] = []

  def for_spec(self, features_spec) -> Callable:
    """The step for batches of `features_spec` (its batch dimension None,
    so a short last batch does not retrace): a concrete function, which
    another function (a SavedModel's signature) calls as it is, where a
    tf.function would be traced again for the save's context."""
    step = next((s for known, s in self._steps if known == features_spec), None)
    if step is None:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top,redefined-outer-name

      model = self.model
      step = tf.function(
          lambda x: model(x, training=False),
          input_signature=[features_spec]).get_concrete_function()
      self._steps.append((features_spec, step))
    return step


def predict_dataset(
    model,
    dataset: 'tf.data.Dataset',
    step: Optional[Callable] = None) -> Tuple[np.ndarray, np.ndarray]:
  """(labels, outputs) over a finite (features, label) dataset.

  Labels are collected from the same batches the model scores, so they line
  up whatever the dataset's order. One output per row gives a vector; K per
  row (multiclass probabilities) an [N, K] array. `step` is a
  `ScoringSteps` step of this model for the dataset's features, else one is
  traced.
  """
  step = step or ScoringSteps(model).for_spec(dataset.element_spec[0])
  labels, outputs = [], []
  for x, y in dataset:
    out = step(x).numpy()
    outputs.append(out.reshape(out.shape[0], -1))
    labels.append(y.numpy().reshape(-1))
  if not labels:
    return np.zeros(0), np.zeros(0)
  outputs = np.concatenate(outputs)
  return np.concatenate(labels), (
      outputs.reshape(-1) if outputs.shape[1] == 1 else outputs)


# ----------------------------------------------------------------- reporting

BINARY_TABLE_ROWS = [
    ('rows', 'rows', '{:,d}'),
    ('accuracy', 'accuracy', '{:.4f}'),
    ('roc_auc', 'ROC AUC', '{:.4f}'),
    ('pr_auc', 'PR AUC', '{:.4f}'),
    ('precision', 'precision', '{:.4f}'),
    ('recall', 'recall', '{:.4f}'),
    ('f1', 'F1', '{:.4f}'),
    ('log_loss', 'log loss', '{:.4f}'),
    ('base_rate', 'base rate', '{:.4f}'),
    ('threshold', 'threshold', '{:.4f}'),
]


def _fmt(fmt: str, value: Any) -> str:
  if isinstance(value, float) and math.isnan(value):
    return 'n/a'
  return fmt.format(value)


def format_table(by_split: Mapping[str, Mapping[str, Any]],
                 rows: Sequence[Tuple[str, str, str]] = BINARY_TABLE_ROWS,
                 confusion: bool = True) -> str:
  """A fixed-width table, one column per split (binary: confusion matrix
  below)."""
  splits = list(by_split)
  width = max(12, max((len(s) for s in splits), default=0) + 2)
  lines = ['metric'.ljust(12) + ''.join(s.rjust(width) for s in splits)]
  for key, title, fmt in rows:
    lines.append(
        title.ljust(12) + ''.join(
            _fmt(fmt, by_split[s].get(key, float('nan'))).rjust(width)
            for s in splits))
  for s in (splits if confusion else ()):
    cm = by_split[s]['confusion_matrix']
    lines.append(f'confusion matrix [{s}] (rows: true 0/1, columns: '
                 f'predicted 0/1): [[{cm["tn"]}, {cm["fp"]}], '
                 f'[{cm["fn"]}, {cm["tp"]}]]')
  return '\n'.join(lines)


def format_fold_table(
    summary: Mapping[str, Mapping[str, Any]],
    rows: Sequence[Tuple[str, str, str]] = BINARY_TABLE_ROWS) -> str:
  """K-fold results: mean +- std per metric, one column per evaluated set."""
  sets = list(summary)
  width = max(22, max((len(s) for s in sets), default=0) + 2)
  lines = ['metric'.ljust(12) + ''.join(s.rjust(width) for s in sets)]
  for key, title, row_fmt in rows:
    fmt = '{:,.0f}' if key == 'rows' else row_fmt
    cells = []
    for s in sets:
      stat = summary[s].get(key)
      cells.append('' if stat is None else
                   f'{_fmt(fmt, stat["mean"])} ± {_fmt(fmt, stat["std"])}')
    lines.append(title.ljust(12) + ''.join(c.rjust(width) for c in cells))
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
  import tensorflow as tf  # pylint: disable=g-import-not-at-top,redefined-outer-name

  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(json.dumps(_json_safe(dict(doc)), indent=2, sort_keys=True) + '\n')


def predict_splits(
    model,
    datasets: Mapping[str, 'tf.data.Dataset'],
    steps: Optional[ScoringSteps] = None
) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
  """split -> (labels, probabilities), scored with `steps` (ScoringSteps
  of `model`; new ones if None)."""
  steps = steps or ScoringSteps(model)
  return {
      name: predict_dataset(model, ds, steps.for_spec(ds.element_spec[0]))
      for name, ds in datasets.items()
  }


def summarize_folds(
    per_fold: Sequence[Mapping[str, Any]]) -> Dict[str, Dict[str, float]]:
  """mean and sample std (ddof=1; 0 for one fold) of every numeric metric."""
  keys = [
      k for k, v in per_fold[0].items()
      if isinstance(v, (int, float)) and not isinstance(v, bool)
  ]
  out = {}
  for k in keys:
    values = np.array([float(m[k]) for m in per_fold], dtype=np.float64)
    out[k] = {
        'mean': float(np.mean(values)),
        'std': float(np.std(values, ddof=1)) if values.size > 1 else 0.0,
        'min': float(np.min(values)),
        'max': float(np.max(values)),
    }
  return out


def splits_in_order(names: Iterable[str]) -> List[str]:
  order = {'train': 0, 'eval': 1, 'test': 2}
  return sorted(names, key=lambda n: (order.get(n, 3), n))
