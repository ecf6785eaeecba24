"""The regression head: one number in the label's own units.

A regression model fits the label standardized with the train split's mean
and standard deviation and un-standardizes in its last layer, so its output
is in label units (log units with log_target) while the loss and the
optimizers see a target of unit scale, whatever the label's magnitude. With
log_target the transform fitted log1p of the label; metrics, the report and
the export's predictions are expm1 of the output, back in label units (the
fitted scale's RMSE is reported too). Class weights and oversampling do not
apply.
"""

import math
from typing import Any, Dict

import numpy as np
import tensorflow as tf

from core.config import DatasetConfig
from core.config import REGRESSION
from trainer import plots
from trainer import report
from trainer.heads import base

# (metric key, title, format) rows of the console table and the report.
_TABLE_ROWS = [
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


class RegressionHead(base.Head):
  """Regression; see the module docstring."""
  task = REGRESSION
  output_name = base.PREDICTIONS
  monitor = 'val_rmse'
  monitor_mode = 'min'
  monitor_title = 'RMSE (streaming, fitted scale)'

  def __init__(self,
               config: DatasetConfig,
               mean: float = 0.0,
               std: float = 1.0):
    super().__init__(config)
    self.mean = float(mean)
    # A constant label has no spread to standardize by.
    self.std = float(std) if std and math.isfinite(std) and std > 0 else 1.0
    self.log_target = self.label.log_target

  # ---------------------------------------------------------------- model

  def output(self, logits):
    from trainer.heads import regression_layers  # pylint: disable=g-import-not-at-top
    rescale = regression_layers.Rescale(
        self.std, self.mean, name=self.output_name)
    return rescale(logits)

  def loss(self):
    from trainer.heads import regression_layers  # pylint: disable=g-import-not-at-top
    return regression_layers.StandardizedMeanSquaredError(self.std)

  def keras_metrics(self, threshold):
    import tf_keras as keras  # pylint: disable=g-import-not-at-top
    return [
        keras.metrics.RootMeanSquaredError(name='rmse'),
        keras.metrics.MeanAbsoluteError(name='mae')
    ]

  def to_label_units(self, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return signed_expm1(values) if self.log_target else values

  # ------------------------------------------------------------- training

  def train_label_summary(self, label_summary, counts):
    return {
        'train_label': {
            'mean': label_summary['mean'],
            'std': label_summary['std']
        }
    }

  # ----------------------------------------------------------- evaluation

  def metrics(self, labels, outputs, threshold=0.5):
    m = regression_metrics(
        self.to_label_units(labels), self.to_label_units(outputs))
    if self.log_target:
      # The scale the model was fitted on, too.
      m['rmse_log'] = regression_metrics(
          np.asarray(labels).reshape(-1),
          np.asarray(outputs).reshape(-1))['rmse']
    return m

  # -------------------------------------------------------------- reports

  def table_rows(self):
    rows = list(_TABLE_ROWS)
    if self.log_target:
      rows.append(('rmse_log', 'RMSE (log)', '{:.4f}'))
    return rows

  def figures(self, model_dir, doc, predictions, splits):
    in_units = {
        s: (self.to_label_units(y), self.to_label_units(p))
        for s, (y, p) in predictions.items()
    }
    return super().figures(model_dir, doc, predictions, splits) + [
        plots.Figure(
            report.figure_path(model_dir, 'scatter'), 'predicted_vs_actual',
            (in_units, self.log_target)),
        plots.Figure(
            report.figure_path(model_dir, 'residuals'), 'residuals',
            (in_units,)),
    ]

  def report_about(self, doc):
    return ('Regression; metrics in the label\'s own units' +
            (' (the model fits log1p of the label; predictions are '
             'expm1 of its output)' if self.log_target else '') + '.')

  def report_details(self, doc, splits):
    return f'''
<h2>Predictions</h2>
{report.img("scatter", "predicted against actual")} {report.img(
    "residuals", "errors")}
'''

  # -------------------------------------------------------------- serving

  def serving_outputs(self, outputs, threshold):
    y = tf.reshape(tf.cast(outputs, tf.float32), [-1, 1])
    if self.log_target:
      y = tf.sign(y) * tf.math.expm1(tf.abs(y))
    return {base.PREDICTIONS: y}

  def output_metadata(self):
    return {
        base.PREDICTIONS:
            'float32 [N, 1]' +
            (' (expm1 of the log-scale fit)' if self.log_target else '')
    }


def regression_metrics(labels: np.ndarray,
                       predictions: np.ndarray) -> Dict[str, Any]:
  """RMSE, MAE, R², median absolute error and the means of label and
  prediction (NaN for an empty split)."""
  y = np.asarray(labels, dtype=np.float64).reshape(-1)
  p = np.asarray(predictions, dtype=np.float64).reshape(-1)
  if y.size != p.size:
    raise ValueError(f'{y.size} labels but {p.size} predictions')
  if not y.size:
    nan = float('nan')
    return {
        'rows': 0,
        'rmse': nan,
        'mae': nan,
        'r2': nan,
        'median_abs_error': nan,
        'mean_label': nan,
        'mean_prediction': nan
    }
  err = p - y
  total = float(np.sum((y - y.mean())**2))
  return {
      'rows': int(y.size),
      'rmse': float(np.sqrt(np.mean(err**2))),
      'mae': float(np.mean(np.abs(err))),
      # 1 - SSE / SST: the share of the label's variance explained.
      'r2': float(1.0 - np.sum(err**2) / total) if total else float('nan'),
      'median_abs_error': float(np.median(np.abs(err))),
      'mean_label': float(y.mean()),
      'mean_prediction': float(p.mean()),
  }
