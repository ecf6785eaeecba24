"""What every head has: the interface the trainer, the export, the report
and trainer.predict use, and the behaviour heads share unless they say
otherwise (see trainer/heads/__init__.py for what a head decides).

Callers never ask which task a head serves: they call its methods. The
defaults here are those of a head without a decision threshold (multiclass,
regression): metrics at no threshold, nothing scored through the export, a
report page of metrics, the head's own figures and the learning curves.
"""

from typing import (
    Any,
    Dict,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    TYPE_CHECKING,
)

import numpy as np
import tensorflow as tf

from core import html
from core.config import DatasetConfig
from core.errors import ConfigError
from core.layout import ExportDir
from trainer import evaluate
from trainer import plots
from trainer import report
from trainer.hparams import HParams

if TYPE_CHECKING:
  # Imported by the methods that build a model: a command that scores
  # exports (trainer.push) loads no Keras.
  import tf_keras as keras

# The export's outputs (its signatures are core.layout.ExportDir's).
PROBABILITIES = ExportDir.PROBABILITIES
CLASSES = ExportDir.CLASSES
PREDICTIONS = ExportDir.PREDICTIONS

# split -> (labels, model outputs), as evaluate.predict_splits returns them.
Predictions = Mapping[str, Tuple[np.ndarray, np.ndarray]]


class Oversampling(NamedTuple):
  """How the training stream is drawn."""
  minority_label: int  # the label oversampled (when model.oversample is set)
  steps_per_epoch: Optional[int]  # None: an epoch is one pass over the data


class Evaluation(NamedTuple):
  """A trained model's evaluation by its head."""
  # The metrics.json entries: one per split, and whatever else the head
  # reports (a binary head: its threshold and the metrics at 0.5).
  metrics: Dict[str, Any]
  threshold: float  # the decision threshold the export carries
  metadata: Dict[str, Any]  # what the head adds to the export's metadata


class Head:
  """The task-specific end of the model; see trainer/heads/__init__.py."""
  task: str = ''
  output_name: str = ''
  units: int = 1
  label_dtype = tf.float32
  monitor: str = ''  # the Keras validation metric early stopping watches
  monitor_mode: str = 'max'
  # The learning curves' second panel: the watched metric, streaming.
  monitor_title: str = ''

  def __init__(self, config: DatasetConfig):
    self.config = config
    self.label = config.label

  # ---------------------------------------------------------------- model

  def output(self, logits: tf.Tensor) -> tf.Tensor:
    raise NotImplementedError

  def loss(self) -> 'keras.losses.Loss':
    raise NotImplementedError

  def keras_metrics(self, threshold: float) -> List['keras.metrics.Metric']:
    raise NotImplementedError

  # ------------------------------------------------------------- training

  def class_counts(self, label_summary: Mapping[str, Any]) -> Dict[int, int]:
    """Train rows per class index (data.label_summary); none without
    classes."""
    return {}

  def class_weight(self, hp: HParams,
                   counts: Mapping[int, int]) -> Optional[Dict[int, float]]:
    """Keras class weights from model.class_weight; only `none` fits a head
    without classes."""
    if hp.class_weight == 'none':
      return None
    raise ConfigError(f'model.class_weight: {hp.class_weight!r} weighs '
                      f'classes, but the label task is {self.task}; use none')

  def oversampling(self, hp: HParams, counts: Mapping[int,
                                                      int]) -> Oversampling:
    """The training stream for model.oversample; only a binary label has a
    minority class to oversample."""
    if hp.oversample:
      raise ConfigError(f'model.oversample: {hp.oversample} oversamples the '
                        'minority class of a binary label, but the label task '
                        f'is {self.task}; use 0 (or class_weight: balanced '
                        'for multiclass)')
    return Oversampling(1, hp.steps_per_epoch)

  def train_label_summary(self, label_summary: Mapping[str, Any],
                          counts: Mapping[int, int]) -> Dict[str, Any]:
    """What the training summary records about the train split's labels."""
    raise NotImplementedError

  # ----------------------------------------------------------- evaluation

  def metrics(self,
              labels: np.ndarray,
              outputs: np.ndarray,
              threshold: float = 0.5) -> Dict[str, Any]:
    """Exact metrics of one split from labels and the model's outputs."""
    raise NotImplementedError

  def evaluate(self, predictions: Predictions, hp: HParams) -> Evaluation:
    """The metrics of every split of `predictions`; a head without a
    decision threshold exports model.threshold as it is."""
    return Evaluation(
        {
            split: self.metrics(y, p, hp.threshold)
            for split, (y, p) in predictions.items()
        }, hp.threshold, {})

  def fold_metrics(self, predictions: Predictions, hp: HParams,
                   held_out: str) -> Dict[str, Any]:
    """One K-fold entry's metrics: 'threshold' and one entry per split of
    `predictions`, `held_out` being the fold's own held-out records."""
    return dict(
        {
            split: self.metrics(y, p, hp.threshold)
            for split, (y, p) in predictions.items()
        },
        threshold=hp.threshold)

  def fold_sets(self, splits: Sequence[str]) -> List[str]:
    """The metric sets of a K-fold entry that are summarized over folds."""
    return list(splits)

  def label_fields(self) -> Dict[str, Any]:
    """What metrics.json says about the label besides its task."""
    return {}

  def export_threshold(self, threshold: float) -> Optional[float]:
    """The threshold recorded in the export's metadata (None: no decision
    threshold)."""
    return None

  def metrics_through_export(self, export_dir: str, preprocess_dir: str,
                             hp: HParams, threshold: float,
                             splits: Sequence[str]) -> Dict[str, Any]:
    """metrics.json entries computed by scoring raw rows through the
    export just written (none by default)."""
    return {}

  # -------------------------------------------------------------- reports

  def table_rows(self) -> List[Tuple[str, str, str]]:
    """(metric key, title, format) rows of the console table."""
    raise NotImplementedError

  def format_table(self, by_split: Mapping[str, Mapping[str, Any]]) -> str:
    """The console table of the head's metrics, one column per split."""
    return evaluate.format_table(
        by_split, rows=self.table_rows(), confusion=False)

  def format_results(self, doc: Mapping[str, Any],
                     splits: Sequence[str]) -> str:
    """What trainer.task prints about the metrics of a finished run."""
    return self.format_table({s: doc[s] for s in splits})

  def figures(self, model_dir: str, doc: Mapping[str,
                                                 Any], predictions: Predictions,
              splits: Sequence[str]) -> List[plots.Figure]:
    """The head's figures of the report, for paths in `model_dir`."""
    training = doc.get('training', {})
    return [
        plots.Figure(
            report.figure_path(model_dir, 'learning'), 'learning_curves',
            (training.get('history', {}), training.get('best_epoch'),
             self.monitor[len('val_'):], self.monitor_title))
    ]

  def report_section(self, doc: Mapping[str, Any],
                     splits: Sequence[str]) -> str:
    """The report page's part between its header and its data section:
    the metrics and what they say about the model."""
    hp = doc.get('hparams', {})
    training = doc.get('training', {})
    about = self.report_about(doc)
    e = html.escape
    return f'''<h2>Metrics</h2>
<p>{about} The test split played no part in training or early stopping.</p>
{report.metrics_table(doc, splits, self.table_rows())}
<p class="muted">Model: {e(hp.get("model_type", ""))}, hidden units
{e(hp.get("hidden_units", ""))}; {e(training.get("epochs_run", ""))}
epochs in {e(training.get("seconds", ""))} s (best epoch
{e(training.get("best_epoch", ""))} by {e(training.get("monitor", ""))},
weights restored from it).</p>
{self.report_details(doc, splits)}
<h2>Learning curves</h2>
<p>Per epoch, on train (as trained) and on eval.</p>
{report.img("learning", "loss per epoch")}

'''

  def report_about(self, doc: Mapping[str, Any]) -> str:
    """HTML: one or two sentences on what the label is and how the metrics
    read."""
    raise NotImplementedError

  def report_details(self, doc: Mapping[str, Any],
                     splits: Sequence[str]) -> str:
    """HTML: the head's own sections after the metrics table."""
    raise NotImplementedError

  # -------------------------------------------------------------- serving

  def serving_outputs(self, outputs: tf.Tensor,
                      threshold: tf.Variable) -> Dict[str, tf.Tensor]:
    raise NotImplementedError

  def output_metadata(self) -> Dict[str, str]:
    raise NotImplementedError


class ClassifierHead(Head):
  """A head over the label's classes (binary and multiclass)."""

  def class_counts(self, label_summary):
    counts = label_summary.get('counts', {})
    return {i: int(counts.get(i, 0)) for i in range(len(self.label.classes))}

  def class_weight(self, hp, counts):
    """'balanced' gives each class n / (K * n_class), a class absent from
    train counting as one row."""
    if hp.class_weight == 'none':
      return None
    if hp.class_weight == 'balanced':
      n = sum(counts.values())
      k = len(counts)
      return {c: n / (k * max(counts.get(c, 0), 1)) for c in range(k)}
    return self.class_weight_by_number(hp)

  def class_weight_by_number(self, hp: HParams) -> Dict[int, float]:
    """Class weights for model.class_weight given as one number."""
    raise NotImplementedError
