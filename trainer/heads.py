"""What the model predicts, per label task: everything that differs between
binary classification, multiclass classification and regression.

The wide & deep body is the same for every task; a head decides how many
logits it ends in and how they become an output, the loss, the metrics Keras
streams (and early stopping watches), the exact metrics reported in
metrics.json, and the serving signature's outputs:

  binary      1 logit -> sigmoid   probabilities [N, 1] = P(positive),
                                   classes [N] (the label's names, at the
                                   export's threshold)
  multiclass  K logits -> softmax  probabilities [N, K] in label.classes
                                   order, classes [N] (the most probable)
  regression  1 output             predictions [N, 1] in the label's own
                                   units (expm1 of the fit with log_target)

A regression model fits the label standardized with the train split's mean
and standard deviation and un-standardizes in its last layer, so its output
is in label units (log units with log_target) while the loss and the
optimizers see a target of unit scale, whatever the label's magnitude.
"""

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipeline.config import BINARY, MULTICLASS, REGRESSION, DatasetConfig
from trainer import evaluate

PROBABILITIES = 'probabilities'
CLASSES = 'classes'
PREDICTIONS = 'predictions'

# (metric key, title, format) rows of the console table, per task.
_MULTICLASS_ROWS = [
    ('rows', 'rows', '{:,d}'),
    ('accuracy', 'accuracy', '{:.4f}'),
    ('macro_f1', 'macro F1', '{:.4f}'),
    ('weighted_f1', 'weighted F1', '{:.4f}'),
    ('macro_roc_auc', 'ROC AUC ovr', '{:.4f}'),
    ('log_loss', 'log loss', '{:.4f}'),
    ('majority_rate', 'majority', '{:.4f}'),
]
_REGRESSION_ROWS = [
    ('rows', 'rows', '{:,d}'),
    ('rmse', 'RMSE', '{:.4f}'),
    ('mae', 'MAE', '{:.4f}'),
    ('r2', 'R²', '{:.4f}'),
    ('median_abs_error', 'median |err|', '{:.4f}'),
    ('mean_label', 'mean label', '{:.4f}'),
    ('mean_prediction', 'mean pred', '{:.4f}'),
]


def signed_expm1(x):
  """Inverse of the signed log1p the transform applies to a log target."""
  return np.sign(x) * np.expm1(np.abs(x))


class Rescale(keras.layers.Layer):
  """y = x * scale + shift with fixed constants: un-standardizes a
  regression output so the model speaks the label's units."""

  def __init__(self, scale: float, shift: float, **kwargs):
    super().__init__(**kwargs)
    self.scale, self.shift = float(scale), float(shift)

  def call(self, inputs):
    return inputs * self.scale + self.shift

  def get_config(self):
    return dict(super().get_config(), scale=self.scale, shift=self.shift)


class StandardizedMeanSquaredError(keras.losses.Loss):
  """Mean squared error in units of the train label's standard deviation.

  Equal to plain MSE divided by std², so its gradient with respect to the
  standardized output is that of a unit-scale problem.
  """

  def __init__(self, std: float, name: str = 'standardized_mse', **kwargs):
    super().__init__(name=name, **kwargs)
    self.std = float(std)

  def call(self, y_true, y_pred):
    diff = (tf.cast(y_pred, tf.float32) - tf.cast(y_true, tf.float32))
    return tf.reduce_mean(tf.square(diff / self.std), axis=-1)

  def get_config(self):
    return dict(super().get_config(), std=self.std)


class Head:
  """The task-specific end of the model; see the module docstring."""
  task: str = ''
  output_name: str = ''
  units: int = 1
  label_dtype = tf.float32
  monitor: str = ''  # the Keras validation metric early stopping watches
  monitor_mode: str = 'max'
  has_threshold = False

  def __init__(self, config: DatasetConfig):
    self.config = config
    self.label = config.label

  def output(self, logits: tf.Tensor) -> tf.Tensor:
    raise NotImplementedError

  def loss(self) -> keras.losses.Loss:
    raise NotImplementedError

  def keras_metrics(self, threshold: float) -> List[keras.metrics.Metric]:
    raise NotImplementedError

  def metrics(self, labels: np.ndarray, outputs: np.ndarray,
              threshold: float = 0.5) -> Dict[str, Any]:
    """Exact metrics of one split from labels and the model's outputs."""
    raise NotImplementedError

  def table_rows(self) -> List[Tuple[str, str, str]]:
    raise NotImplementedError

  def serving_outputs(self, outputs: tf.Tensor,
                      threshold: tf.Variable) -> Dict[str, tf.Tensor]:
    raise NotImplementedError

  def output_metadata(self) -> Dict[str, str]:
    raise NotImplementedError

  def row_fields(self, outputs: Mapping[str, np.ndarray],
                 i: int) -> Dict[str, Any]:
    """One row's prediction as trainer.predict writes it."""
    raise NotImplementedError


class BinaryHead(Head):
  task = BINARY
  output_name = PROBABILITIES
  monitor = 'val_auc'
  has_threshold = True

  def __init__(self, config: DatasetConfig):
    super().__init__(config)
    self.positive = self.label.positive
    self.negative = [c for c in self.label.classes if c != self.positive][0]

  def output(self, logits):
    return keras.layers.Activation('sigmoid', name=self.output_name)(logits)

  def loss(self):
    return keras.losses.BinaryCrossentropy()

  def keras_metrics(self, threshold):
    return [keras.metrics.AUC(name='auc', num_thresholds=1000),
            keras.metrics.BinaryAccuracy(name='accuracy', threshold=threshold)]

  def metrics(self, labels, outputs, threshold=0.5):
    return evaluate.binary_metrics(labels, outputs, threshold)

  def table_rows(self):
    return evaluate.BINARY_TABLE_ROWS

  def serving_outputs(self, outputs, threshold):
    probabilities = tf.reshape(tf.cast(outputs, tf.float32), [-1, 1])
    classes = tf.where(probabilities[:, 0] >= threshold,
                       tf.constant(self.positive), tf.constant(self.negative))
    return {PROBABILITIES: probabilities, CLASSES: classes}

  def output_metadata(self):
    return {PROBABILITIES: 'float32 [N, 1]', CLASSES: 'string [N]'}

  def row_fields(self, outputs, i):
    return {'probability': float(outputs[PROBABILITIES][i][0]),
            'class': _text(outputs[CLASSES][i])}


class MulticlassHead(Head):
  task = MULTICLASS
  output_name = PROBABILITIES
  label_dtype = tf.int64
  monitor = 'val_cross_entropy'
  monitor_mode = 'min'

  def __init__(self, config: DatasetConfig):
    super().__init__(config)
    self.classes = list(self.label.classes)
    self.units = len(self.classes)

  def output(self, logits):
    return keras.layers.Activation('softmax', name=self.output_name)(logits)

  def loss(self):
    return keras.losses.SparseCategoricalCrossentropy()

  def keras_metrics(self, threshold):
    return [keras.metrics.SparseCategoricalAccuracy(name='accuracy'),
            keras.metrics.SparseCategoricalCrossentropy(name='cross_entropy')]

  def metrics(self, labels, outputs, threshold=0.5):
    return multiclass_metrics(labels, outputs, self.classes)

  def table_rows(self):
    return _MULTICLASS_ROWS

  def serving_outputs(self, outputs, threshold):
    probabilities = tf.cast(outputs, tf.float32)
    classes = tf.gather(tf.constant(self.classes),
                        tf.argmax(probabilities, axis=1))
    return {PROBABILITIES: probabilities, CLASSES: classes}

  def output_metadata(self):
    return {PROBABILITIES: f'float32 [N, {self.units}] (label.classes order)',
            CLASSES: 'string [N]'}

  def row_fields(self, outputs, i):
    return {'class': _text(outputs[CLASSES][i]),
            'probabilities': {c: float(p) for c, p in
                              zip(self.classes, outputs[PROBABILITIES][i])}}


class RegressionHead(Head):
  task = REGRESSION
  output_name = PREDICTIONS
  monitor = 'val_rmse'
  monitor_mode = 'min'

  def __init__(self, config: DatasetConfig, mean: float = 0.0,
               std: float = 1.0):
    super().__init__(config)
    self.mean = float(mean)
    # A constant label has no spread to standardize by.
    self.std = float(std) if std and math.isfinite(std) and std > 0 else 1.0
    self.log_target = self.label.log_target

  def output(self, logits):
    return Rescale(self.std, self.mean, name=self.output_name)(logits)

  def loss(self):
    return StandardizedMeanSquaredError(self.std)

  def keras_metrics(self, threshold):
    return [keras.metrics.RootMeanSquaredError(name='rmse'),
            keras.metrics.MeanAbsoluteError(name='mae')]

  def to_label_units(self, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return signed_expm1(values) if self.log_target else values

  def metrics(self, labels, outputs, threshold=0.5):
    m = regression_metrics(self.to_label_units(labels),
                           self.to_label_units(outputs))
    if self.log_target:
      # The scale the model was fitted on, too.
      m['rmse_log'] = regression_metrics(
          np.asarray(labels).reshape(-1), np.asarray(outputs).reshape(-1))[
              'rmse']
    return m

  def table_rows(self):
    rows = list(_REGRESSION_ROWS)
    if self.log_target:
      rows.append(('rmse_log', 'RMSE (log)', '{:.4f}'))
    return rows

  def serving_outputs(self, outputs, threshold):
    y = tf.reshape(tf.cast(outputs, tf.float32), [-1, 1])
    if self.log_target:
      y = tf.sign(y) * tf.math.expm1(tf.abs(y))
    return {PREDICTIONS: y}

  def output_metadata(self):
    return {PREDICTIONS: 'float32 [N, 1]' + (
        ' (expm1 of the log-scale fit)' if self.log_target else '')}

  def row_fields(self, outputs, i):
    return {'prediction': float(outputs[PREDICTIONS][i][0])}


def make_head(config: DatasetConfig,
              label_summary: Optional[Mapping[str, Any]] = None) -> Head:
  """The head for the config's label task. A regression head needs the train
  split's label mean and std (data.label_summary); without them it starts
  from 0 and 1, which only matters for training, not for reading an export."""
  task = config.label.task
  if task == BINARY:
    return BinaryHead(config)
  if task == MULTICLASS:
    return MulticlassHead(config)
  summary = label_summary or {}
  return RegressionHead(config, summary.get('mean', 0.0),
                        summary.get('std', 1.0))


def _text(value: Any) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


# ------------------------------------------------------------------ metrics


def multiclass_metrics(labels: np.ndarray, probabilities: np.ndarray,
                       classes: Sequence[str]) -> Dict[str, Any]:
  """Accuracy, F1 (macro and support-weighted), one-vs-rest ROC AUC, log
  loss, per-class precision/recall/F1 and the confusion matrix (rows: true
  class, columns: predicted, in `classes` order)."""
  k = len(classes)
  y = np.asarray(labels).reshape(-1).astype(np.int64)
  p = np.asarray(probabilities, dtype=np.float64).reshape(-1, k)
  if y.size != p.shape[0]:
    raise ValueError(f'{y.size} labels but {p.shape[0]} predictions')
  n = int(y.size)
  pred = np.argmax(p, axis=1) if n else np.zeros(0, np.int64)
  cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
  per_class = {}
  f1s, supports, aucs = [], [], []
  for i, name in enumerate(classes):
    tp = int(cm[i, i])
    predicted, support = int(cm[:, i].sum()), int(cm[i, :].sum())
    precision = tp / predicted if predicted else 0.0
    recall = tp / support if support else 0.0
    f1 = (2 * precision * recall / (precision + recall)
          if precision + recall else 0.0)
    auc = evaluate.roc_auc(y == i, p[:, i]) if n else float('nan')
    per_class[name] = {'precision': precision, 'recall': recall, 'f1': f1,
                       'support': support, 'roc_auc': auc}
    f1s.append(f1)
    supports.append(support)
    if not math.isnan(auc):
      aucs.append(auc)
  picked = np.clip(p[np.arange(n), y] if n else np.zeros(0),
                   evaluate.LOG_LOSS_EPS, 1.0)
  return {
      'rows': n,
      'accuracy': float(np.mean(pred == y)) if n else 0.0,
      'macro_f1': float(np.mean(f1s)),
      'weighted_f1': (float(np.dot(f1s, supports) / n) if n else 0.0),
      'macro_roc_auc': float(np.mean(aucs)) if aucs else float('nan'),
      'log_loss': float(-np.mean(np.log(picked))) if n else float('nan'),
      'majority_rate': float(max(supports) / n) if n else 0.0,
      'per_class': per_class,
      'classes': list(classes),
      'confusion_matrix': cm.tolist(),
  }


def regression_metrics(labels: np.ndarray,
                       predictions: np.ndarray) -> Dict[str, Any]:
  y = np.asarray(labels, dtype=np.float64).reshape(-1)
  p = np.asarray(predictions, dtype=np.float64).reshape(-1)
  if y.size != p.size:
    raise ValueError(f'{y.size} labels but {p.size} predictions')
  if not y.size:
    nan = float('nan')
    return {'rows': 0, 'rmse': nan, 'mae': nan, 'r2': nan,
            'median_abs_error': nan, 'mean_label': nan, 'mean_prediction': nan}
  err = p - y
  total = float(np.sum((y - y.mean()) ** 2))
  return {
      'rows': int(y.size),
      'rmse': float(np.sqrt(np.mean(err ** 2))),
      'mae': float(np.mean(np.abs(err))),
      # 1 - SSE / SST: the share of the label's variance explained.
      'r2': float(1.0 - np.sum(err ** 2) / total) if total else float('nan'),
      'median_abs_error': float(np.median(np.abs(err))),
      'mean_label': float(y.mean()),
      'mean_prediction': float(p.mean()),
  }


def format_table(head: Head, by_split: Mapping[str, Mapping[str, Any]]) -> str:
  """The console table of the head's metrics, one column per split."""
  text = evaluate.format_table(by_split, rows=head.table_rows(),
                               confusion=head.task == BINARY)
  if head.task == MULTICLASS:
    for split, m in by_split.items():
      text += (f'\nconfusion matrix [{split}] (rows: true, columns: '
               f'predicted; {", ".join(m["classes"])}): '
               f'{m["confusion_matrix"]}')
  return text
