"""The binary head: P(positive class) and a decision threshold.

One logit and a sigmoid. The model's probabilities become classes at a
threshold chosen on the eval split's predictions (model.threshold_objective;
the test split is never looked at), which the export carries as a variable.
The metrics are reported at that threshold and, for reference, at 0.5; the
report adds ROC and precision-recall curves, calibration, the confusion
matrix at the threshold and per-slice metrics of raw rows scored through the
export. Imbalance is handled by class weights (a number weighs the positive
class) or by oversampling the minority class of the training stream.
"""

import math
from typing import Any, Dict, Mapping, Sequence

import tensorflow as tf

from core import html
from core.config import BINARY
from core.config import DatasetConfig
from core.errors import ConfigError
from trainer import evaluate
from trainer import plots
from trainer import report
from trainer import slices
from trainer.heads import base

# Metrics are also reported at this threshold, whatever the chosen one.
REFERENCE_THRESHOLD = 0.5
REFERENCE_KEY = 'at_threshold_0.5'

# (metric key, title, format) rows of the report's metrics tables.
_REPORT_ROWS = [
    ('rows', 'rows', '{:,d}'),
    ('accuracy', 'accuracy', '{:.4f}'),
    ('roc_auc', 'ROC AUC', '{:.4f}'),
    ('pr_auc', 'PR AUC (average precision)', '{:.4f}'),
    ('precision', 'precision', '{:.4f}'),
    ('recall', 'recall', '{:.4f}'),
    ('f1', 'F1', '{:.4f}'),
    ('log_loss', 'log loss', '{:.4f}'),
    ('calibration_error', 'expected calibration error', '{:.4f}'),
    ('base_rate', 'base rate', '{:.4f}'),
    ('predicted_positive_rate', 'predicted positive rate', '{:.4f}'),
    ('threshold', 'threshold', '{:.4f}'),
]
_SLICE_COLUMNS = [
    ('rows', 'rows', '{:,d}'),
    ('base_rate', 'base rate', '{:.4f}'),
    ('predicted_positive_rate', 'predicted positive', '{:.4f}'),
    ('accuracy', 'accuracy', '{:.4f}'),
    ('precision', 'precision', '{:.4f}'),
    ('recall', 'recall', '{:.4f}'),
    ('f1', 'F1', '{:.4f}'),
    ('roc_auc', 'ROC AUC', '{:.4f}'),
]


class BinaryHead(base.ClassifierHead):
  """Binary classification; see the module docstring."""
  task = BINARY
  output_name = base.PROBABILITIES
  monitor = 'val_auc'
  monitor_title = 'ROC AUC (streaming)'

  def __init__(self, config: DatasetConfig):
    super().__init__(config)
    # A binary label always names its positive class (core/config.py).
    assert self.label.positive is not None
    self.positive: str = self.label.positive
    self.negative = [c for c in self.label.classes if c != self.positive][0]

  # ---------------------------------------------------------------- model

  def output(self, logits):
    import tf_keras as keras  # pylint: disable=g-import-not-at-top
    return keras.layers.Activation('sigmoid', name=self.output_name)(logits)

  def loss(self):
    import tf_keras as keras  # pylint: disable=g-import-not-at-top
    return keras.losses.BinaryCrossentropy()

  def keras_metrics(self, threshold):
    import tf_keras as keras  # pylint: disable=g-import-not-at-top
    return [
        keras.metrics.AUC(name='auc', num_thresholds=1000),
        keras.metrics.BinaryAccuracy(name='accuracy', threshold=threshold)
    ]

  # ------------------------------------------------------------- training

  def class_weight_by_number(self, hp):
    """A number weighs the positive class; the negative one stays 1."""
    return {0: 1.0, 1: float(hp.class_weight)}

  def oversampling(self, hp, counts):
    """The minority class drawn at model.oversample's share of the stream;
    one epoch then passes over the majority class about once."""
    if not hp.oversample:
      return base.Oversampling(1, hp.steps_per_epoch)
    negatives, positives = counts[0], counts[1]
    minority = 1 if positives <= negatives else 0
    majority_rows = max(negatives, positives)
    natural_share = min(negatives, positives) / (negatives + positives)
    if hp.oversample <= natural_share:
      raise ConfigError(
          f'oversample: {hp.oversample} is not above the minority class\' '
          f'share of the training records ({natural_share:.4f}); use a '
          'larger share or 0 (off)')
    return base.Oversampling(
        minority, hp.steps_per_epoch or
        math.ceil(majority_rows / (1.0 - hp.oversample) / hp.batch_size))

  def train_label_summary(self, label_summary, counts):
    return {
        'train_label_counts': {
            'negative': counts[0],
            'positive': counts[1]
        }
    }

  # ----------------------------------------------------------- evaluation

  def metrics(self, labels, outputs, threshold=0.5):
    return evaluate.binary_metrics(labels, outputs, threshold)

  def _choose_threshold(self, predictions: base.Predictions, split: str,
                        hp) -> Dict[str, Any]:
    return evaluate.choose_threshold(*predictions[split],
                                     hp.threshold_objective,
                                     hp.threshold_target, hp.threshold)

  def _reference(self, predictions: base.Predictions) -> Dict[str, Any]:
    return {
        split: self.metrics(y, p, REFERENCE_THRESHOLD)
        for split, (y, p) in predictions.items()
    }

  def evaluate(self, predictions, hp):
    """Metrics at the threshold model.threshold_objective picks on the eval
    split's predictions, and at 0.5 for reference."""
    selection = self._choose_threshold(predictions, 'eval', hp)
    selection['split'] = 'eval'
    threshold = selection['threshold']
    metrics = {
        'threshold': threshold,
        'threshold_selection': selection,
        REFERENCE_KEY: self._reference(predictions),
    }
    metrics.update({
        split: self.metrics(y, p, threshold)
        for split, (y, p) in predictions.items()
    })
    return base.Evaluation(metrics, threshold,
                           {'threshold_selection': selection})

  def fold_metrics(self, predictions, hp, held_out):
    """The threshold is chosen on the held-out fold, as on eval in one run."""
    threshold = self._choose_threshold(predictions, held_out, hp)['threshold']
    out = {'threshold': threshold}
    for split, (y, p) in predictions.items():
      out[split] = self.metrics(y, p, threshold)
      out[f'{split}_{REFERENCE_KEY}'] = self.metrics(y, p, REFERENCE_THRESHOLD)
    return out

  def fold_sets(self, splits):
    return list(splits) + [f'{s}_{REFERENCE_KEY}' for s in splits]

  def label_fields(self):
    return {'positive_class': self.positive}

  def export_threshold(self, threshold):
    return float(threshold)

  def metrics_through_export(self, export_dir, preprocess_dir, hp, threshold,
                             splits):
    """Per-slice metrics of the raw rows, scored by the export just written
    (the route a served request takes)."""
    return {
        'slices':
            slices.slice_metrics(
                export_dir,
                preprocess_dir,
                self.config,
                hp.slices,
                hp.slice_buckets,
                threshold,
                splits=list(splits))
    }

  # -------------------------------------------------------------- reports

  def table_rows(self):
    return evaluate.BINARY_TABLE_ROWS

  def format_table(self, by_split):
    return evaluate.format_table(
        by_split, rows=self.table_rows(), confusion=True)

  def format_results(self, doc, splits):
    sel = doc['threshold_selection']
    target = f' {sel["target"]}' if sel.get('target') is not None else ''
    return '\n'.join([
        f'trainer: threshold {doc["threshold"]:.4f} ({sel["objective"]}'
        f'{target}, chosen on {sel["split"]})',
        self.format_table({s: doc[s] for s in splits}),
        f'at threshold {REFERENCE_THRESHOLD} (reference):',
        evaluate.format_table({s: doc[REFERENCE_KEY][s] for s in splits})
    ])

  def figures(self, model_dir, doc, predictions, splits):

    def path(key):
      return report.figure_path(model_dir, key)

    return super().figures(model_dir, doc, predictions, splits) + [
        plots.Figure(path('roc'), 'roc_curves', (predictions, doc)),
        plots.Figure(path('pr'), 'precision_recall_curves', (predictions, doc)),
        plots.Figure(
            path('confusion'), 'binary_confusion',
            (doc, splits, (self.negative, self.positive))),
        plots.Figure(path('calibration'), 'calibration', (predictions,)),
    ]

  def report_section(self, doc, splits):
    e = html.escape
    sel = doc.get('threshold_selection') or {}
    target = (f' (target {sel["target"]})'
              if sel.get('target') is not None else '')
    reached = '' if sel.get('reached', True) else (
        ' <strong>The target was not reached on eval; the threshold with the '
        'best precision was used.</strong>')
    hp = doc.get('hparams', {})
    training = doc.get('training', {})
    imbalance = []
    if hp.get('class_weight', 'none') != 'none':
      imbalance.append(f'class weights {training.get("class_weight")}')
    if hp.get('oversample'):
      imbalance.append(f'minority class oversampled to {hp["oversample"]} of '
                       'the training stream')
    threshold = e(report.fmt(doc['threshold'], '{:.4f}'))
    about = (
        '<p>Positive class <strong>'
        f'{e(doc.get("positive_class", self.positive))}</strong>.\n'
        f'Decision threshold <strong data-key="threshold">{threshold}'
        f'</strong>, chosen on the <em>{e(sel.get("split", "eval"))}</em>\n'
        f'split by <code>{e(sel.get("objective", "fixed"))}</code>'
        f'{e(target)};\n'
        'the test split played no part in training, early stopping or the\n'
        f'threshold.{reached}</p>')
    reference = report.metrics_table(doc, splits, _REPORT_ROWS, REFERENCE_KEY,
                                     REFERENCE_KEY + '.')
    img = report.img
    return f'''<h2>Metrics</h2>
{about}
{report.metrics_table(doc, splits, _REPORT_ROWS)}
<p>The same predictions at threshold 0.5, for reference:</p>
{reference}
<p class="muted">Model: {e(hp.get("model_type", ""))}, hidden units
{e(hp.get("hidden_units", ""))}; {e(training.get("epochs_run", ""))}
epochs in {e(training.get("seconds", ""))} s (best epoch
{e(training.get("best_epoch", ""))}, weights restored from it);
{e("; ".join(imbalance) or "no class weights or oversampling")}.</p>

<h2>Confusion matrix</h2>
{self._confusion_tables(doc, splits)}
<div>{img("confusion", "confusion matrices")}</div>

<h2>ROC and precision-recall curves</h2>
{img("roc", "ROC curves")} {img("pr", "precision-recall curves")}

<h2>Learning curves</h2>
<p>Per epoch, on train (as trained: dropout, class weights and oversampling
apply) and on eval.</p>
{img("learning", "loss and AUC per epoch")}

<h2>Calibration</h2>
<p>Observed positive rate against mean prediction in ten equal-width bins;
on the diagonal the probabilities mean what they say.</p>
{img("calibration", "calibration plot")}

<h2>Per-slice metrics</h2>
{_slices_html(doc.get("slices"))}

'''

  def _confusion_tables(self, doc: Mapping[str, Any],
                        splits: Sequence[str]) -> str:
    """Counts at the threshold, per split, rows true and columns predicted,
    each count keyed to its metrics.json entry."""
    neg, pos = self.negative, self.positive
    out = []
    for s in splits:
      cm = doc[s]['confusion_matrix']

      def count(k, s=s, cm=cm):
        return html.cell(
            f'{cm[k]:,d}', class_='num', data_key=f'{s}.confusion_matrix.{k}')

      out.append(
          html.table(
              None, [
                  html.row([
                      html.cell('', 'th'),
                      html.cell(f'predicted {neg}', 'th'),
                      html.cell(f'predicted {pos}', 'th')
                  ]),
                  html.row([
                      html.cell(f'true {neg}', 'th'),
                      count('tn'),
                      count('fp')
                  ]),
                  html.row([
                      html.cell(f'true {pos}', 'th'),
                      count('fn'),
                      count('tp')
                  ]),
              ],
              caption=s,
              class_='confusion'))
    return ''.join(out)

  # -------------------------------------------------------------- serving

  def serving_outputs(self, outputs, threshold):
    probabilities = tf.reshape(tf.cast(outputs, tf.float32), [-1, 1])
    classes = tf.where(probabilities[:, 0] >= threshold,
                       tf.constant(self.positive), tf.constant(self.negative))
    return {base.PROBABILITIES: probabilities, base.CLASSES: classes}

  def output_metadata(self):
    return {base.PROBABILITIES: 'float32 [N, 1]', base.CLASSES: 'string [N]'}


def _slices_html(slices: Mapping[str, Any]) -> str:
  """The per-slice tables of metrics.json's `slices`, or why there are
  none."""
  e = html.escape
  if not slices or not slices.get('available'):
    reason = (slices or {}).get('reason', 'no slices')
    return f'<p class="note" id="slices-unavailable">{e(reason)}</p>'
  parts = [
      f'<p>Source: {e(slices["source"])}. Metrics at the chosen '
      'threshold; ROC AUC is n/a for a slice with one class only.</p>'
  ]
  for split, body in slices['splits'].items():
    overall = body['overall']
    key = f'slices.splits.{split}.overall'
    parts.append(
        f'<h3>{e(split)}</h3><p class="check">All {overall["rows"]:,d} raw '
        f'{e(split)} rows scored through the export: ROC AUC ' + html.cell(
            report.fmt(overall['roc_auc'], '{:.4f}'),
            'span',
            data_key=f'{key}.roc_auc') + ', accuracy ' + html.cell(
                report.fmt(overall['accuracy'], '{:.4f}'),
                'span',
                data_key=f'{key}.accuracy') + '.</p>')
    for column, rows in body['columns'].items():
      trs = []
      for i, row in enumerate(rows):
        prefix = f'slices.splits.{split}.columns.{column}.{i}'
        trs.append(
            html.row([
                html.cell(
                    row['slice'], 'th', scope='row', data_key=f'{prefix}.slice')
            ] + [
                report.number_cell(row[k], spec, f'{prefix}.{k}')
                for k, _, spec in _SLICE_COLUMNS
            ]))
      parts.append(
          html.table(
              [html.cell(column, 'th')] +
              [html.cell(title, 'th') for _, title, _ in _SLICE_COLUMNS],
              trs,
              caption=f'{split} by {column}',
              class_='slices',
              data_column=column,
              data_split=split))
  return ''.join(parts)
