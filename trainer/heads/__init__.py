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

A head also owns what the task changes around the model: which class weights
and oversampling apply to its training stream, how the trained model is
evaluated (a binary head chooses its decision threshold on eval), what K-fold
summarizes, the console table trainer.task prints and the head's part of
MDIR/report.html with its figures. Nothing outside this package asks which
task a head serves; it calls the head.

  base.py               the interface and the behaviour heads share
  binary.py             BinaryHead
  multiclass.py         MulticlassHead and its metrics
  regression.py         RegressionHead and its metrics
  regression_layers.py  its last layer and loss (Keras classes)

Keras is imported by the methods that build a model (and with the regression
head's layers), so a command that only scores exports loads none.
"""

from typing import Any, Mapping, Optional

from core.config import BINARY
from core.config import DatasetConfig
from core.config import MULTICLASS
from trainer.heads.base import CLASSES
from trainer.heads.base import Head
from trainer.heads.base import PREDICTIONS
from trainer.heads.base import PROBABILITIES
from trainer.heads.binary import BinaryHead
from trainer.heads.multiclass import MulticlassHead
from trainer.heads.regression import RegressionHead

__all__ = [
    'CLASSES', 'PREDICTIONS', 'PROBABILITIES', 'BinaryHead', 'Head',
    'MulticlassHead', 'RegressionHead', 'make_head'
]


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
