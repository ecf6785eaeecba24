"""The multiclass head: a probability per class, the most probable wins.

K logits and a softmax; probabilities come in label.classes order and the
predicted class is the most probable one, so there is no threshold. The
metrics are accuracy, macro and support-weighted F1, one-vs-rest ROC AUC,
log loss and per-class precision, recall and F1 with a K x K confusion
matrix; imbalance is handled by balanced class weights.
"""

import math
from typing import Any, Dict, Mapping, Sequence

import numpy as np
import tensorflow as tf

from core import html
from core.config import DatasetConfig
from core.config import MULTICLASS
from core.errors import ConfigError
from trainer import evaluate
from trainer import plots
from trainer import report
from trainer.heads import base

# (metric key, title, format) rows of the console table and the report.
_TABLE_ROWS = [
    ('rows', 'rows', '{:,d}'),
    ('accuracy', 'accuracy', '{:.4f}'),
    ('macro_f1', 'macro F1', '{:.4f}'),
    ('weighted_f1', 'weighted F1', '{:.4f}'),
    ('macro_roc_auc', 'ROC AUC ovr', '{:.4f}'),
    ('log_loss', 'log loss', '{:.4f}'),
    ('majority_rate', 'majority', '{:.4f}'),
]
_PER_CLASS_COLUMNS = [('support', 'rows', '{:,d}'),
                      ('precision', 'precision', '{:.4f}'),
                      ('recall', 'recall', '{:.4f}'), ('f1', 'F1', '{:.4f}'),
                      ('roc_auc', 'ROC AUC (one vs rest)', '{:.4f}')]


class MulticlassHead(base.ClassifierHead):
  """Multiclass classification; see the module docstring."""
  task = MULTICLASS
  output_name = base.PROBABILITIES
  label_dtype = tf.int64
  monitor = 'val_cross_entropy'
  monitor_mode = 'min'
  monitor_title = 'cross entropy (streaming)'

  def __init__(self, config: DatasetConfig):
    super().__init__(config)
    self.classes = list(self.label.classes)
    self.units = len(self.classes)

  # ---------------------------------------------------------------- model

  def output(self, logits):
    import tf_keras as keras  # pylint: disable=g-import-not-at-top
    return keras.layers.Activation('softmax', name=self.output_name)(logits)

  def loss(self):
    import tf_keras as keras  # pylint: disable=g-import-not-at-top
    return keras.losses.SparseCategoricalCrossentropy()

  def keras_metrics(self, threshold):
    import tf_keras as keras  # pylint: disable=g-import-not-at-top
    return [
        keras.metrics.SparseCategoricalAccuracy(name='accuracy'),
        keras.metrics.SparseCategoricalCrossentropy(name='cross_entropy')
    ]

  # ------------------------------------------------------------- training

  def class_weight_by_number(self, hp):
    raise ConfigError(f'model.class_weight: {hp.class_weight!r} weighs the '
                      'positive class of a binary label; a multiclass label '
                      'takes balanced or none')

  def train_label_summary(self, label_summary, counts):
    return {
        'train_label_counts': {
            c: counts[i] for i, c in enumerate(self.classes)
        }
    }

  # ----------------------------------------------------------- evaluation

  def metrics(self, labels, outputs, threshold=0.5):
    return multiclass_metrics(labels, outputs, self.classes)

  # -------------------------------------------------------------- reports

  def table_rows(self):
    return _TABLE_ROWS

  def format_table(self, by_split):
    text = super().format_table(by_split)
    for split, m in by_split.items():
      text += (f'\nconfusion matrix [{split}] (rows: true, columns: '
               f'predicted; {", ".join(m["classes"])}): '
               f'{m["confusion_matrix"]}')
    return text

  def figures(self, model_dir, doc, predictions, splits):
    return super().figures(model_dir, doc, predictions, splits) + [
        plots.Figure(
            report.figure_path(model_dir, 'confusion'), 'class_confusion',
            (doc, splits))
    ]

  def report_about(self, doc):
    about = (f'Multiclass label over {len(self.classes)} classes '
             f'({html.escape(", ".join(self.classes))}); the predicted class '
             'is the most probable one.')
    if doc.get('hparams', {}).get('class_weight', 'none') != 'none':
      about += (' Class weights '
                f'{html.escape(doc.get("training", {}).get("class_weight"))}.')
    return about

  def report_details(self, doc, splits):
    return f'''
<h2>Per class</h2>
{_per_class_tables(doc, splits)}

<h2>Confusion matrix</h2>
<p>Rows: true class; columns: predicted. Shading: the share of the true
class's rows.</p>
<div>{report.img("confusion", "confusion matrices")}</div>
'''

  # -------------------------------------------------------------- serving

  def serving_outputs(self, outputs, threshold):
    probabilities = tf.cast(outputs, tf.float32)
    classes = tf.gather(
        tf.constant(self.classes), tf.argmax(probabilities, axis=1))
    return {base.PROBABILITIES: probabilities, base.CLASSES: classes}

  def output_metadata(self):
    return {
        base.PROBABILITIES: f'float32 [N, {self.units}] (label.classes order)',
        base.CLASSES: 'string [N]'
    }


def _per_class_tables(doc: Mapping[str, Any], splits: Sequence[str]) -> str:
  out = []
  for s in splits:
    trs = []
    for name, m in doc[s]['per_class'].items():
      trs.append(
          html.row([html.cell(name, 'th', scope='row')] + [
              report.number_cell(m[k], spec, f'{s}.per_class.{name}.{k}')
              for k, _, spec in _PER_CLASS_COLUMNS
          ]))
    out.append(
        html.table(
            [html.cell('class', 'th')] +
            [html.cell(title, 'th') for _, title, _ in _PER_CLASS_COLUMNS],
            trs,
            caption=s,
            class_='per-class'))
  return ''.join(out)


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
    f1 = (2 * precision * recall / (precision + recall) if precision +
          recall else 0.0)
    auc = evaluate.roc_auc(y == i, p[:, i]) if n else float('nan')
    per_class[name] = {
        'precision': precision,
        'recall': recall,
        'f1': f1,
        'support': support,
        'roc_auc': auc
    }
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
