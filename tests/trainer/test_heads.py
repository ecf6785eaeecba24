"""The heads' own behaviour: what each task changes around the model.

Class weights, oversampling, the train label summary, the evaluation (a
binary head chooses its threshold on eval), K-fold entries and the console
text, checked per head on hand-made counts and predictions, without
training. The end-to-end runs are in tests/trainer/test_model.py,
test_report.py and tests/test_any_dataset.py.
"""

import numpy as np
import pytest
import yaml

from core.config import parse_config
from core.errors import ConfigError
from tests import datagen
from trainer import heads
from trainer import hparams


def _head(task, label_summary=None):
  """The head of tests/data/mixed.yaml with its label made `task`."""
  raw = datagen.mixed_config(task)
  return heads.make_head(parse_config(yaml.safe_dump(raw)), label_summary)


def test_make_head_follows_the_label_task():
  assert isinstance(_head('binary'), heads.BinaryHead)
  assert isinstance(_head('multiclass'), heads.MulticlassHead)
  regression = _head('regression', {'rows': 9, 'mean': 3.0, 'std': 2.0})
  assert isinstance(regression, heads.RegressionHead)
  assert (regression.mean, regression.std) == (3.0, 2.0)
  # A constant label has no spread to standardize by.
  assert _head('regression', {'rows': 9, 'mean': 3.0, 'std': 0.0}).std == 1.0


def test_class_weights_per_head():
  binary = _head('binary')
  counts = {0: 30, 1: 10}
  assert binary.class_weight(hparams.HParams(), counts) is None
  assert binary.class_weight(hparams.HParams(class_weight='balanced'),
                             counts) == {
                                 0: pytest.approx(40 / 60),
                                 1: pytest.approx(2.0)
                             }
  # A number weighs the positive class.
  assert binary.class_weight(hparams.HParams(class_weight='2.5'), counts) == {
      0: 1.0,
      1: 2.5
  }
  # Multiclass: balanced over K classes; a class absent from train counts 1.
  multiclass = _head('multiclass')
  assert multiclass.class_weight(
      hparams.HParams(class_weight='balanced'), {
          0: 60,
          1: 30,
          2: 0
      }) == {
          0: pytest.approx(0.5),
          1: pytest.approx(1.0),
          2: pytest.approx(30.0)
      }
  with pytest.raises(
      ConfigError,
      match=r"model.class_weight: '2.5'.*"
      r"multiclass label takes balanced or none"):
    multiclass.class_weight(
        hparams.HParams(class_weight='2.5'), {
            0: 1,
            1: 1,
            2: 1
        })
  regression = _head('regression')
  assert regression.class_weight(hparams.HParams(), {}) is None
  with pytest.raises(ConfigError, match='label task is regression; use none'):
    regression.class_weight(hparams.HParams(class_weight='balanced'), {})


def test_oversampling_per_head():
  binary = _head('binary')
  off = binary.oversampling(
      hparams.HParams(steps_per_epoch=7), {
          0: 300,
          1: 100
      })
  assert off == (1, 7)
  # One epoch passes over the majority class about once: 300 rows at half
  # the stream, in batches of 64.
  hp = hparams.HParams(oversample=0.5, batch_size=64)
  assert binary.oversampling(hp, {0: 300, 1: 100}) == (1, 10)
  assert binary.oversampling(hp, {0: 100, 1: 300}) == (0, 10)
  assert binary.oversampling(
      hparams.HParams(oversample=0.5, batch_size=64, steps_per_epoch=3), {
          0: 300,
          1: 100
      }) == (1, 3)
  with pytest.raises(
      ConfigError,
      match=r"oversample: 0.2 is not above the "
      r"minority class' share of the training records "
      r"\(0.2500\)"):
    binary.oversampling(hparams.HParams(oversample=0.2), {0: 300, 1: 100})
  for task in ('multiclass', 'regression'):
    head = _head(task)
    assert head.oversampling(hparams.HParams(), {}) == (1, None)
    with pytest.raises(ConfigError, match=f'label task is {task}; use 0'):
      head.oversampling(hparams.HParams(oversample=0.5), {0: 1, 1: 1, 2: 1})


def test_train_label_counts_per_head():
  binary = _head('binary')
  summary = {'rows': 40, 'counts': {0: 30, 1: 10}}
  counts = binary.class_counts(summary)
  assert counts == {0: 30, 1: 10}
  assert binary.train_label_summary(summary, counts) == {
      'train_label_counts': {
          'negative': 30,
          'positive': 10
      }
  }
  multiclass = _head('multiclass')
  summary = {'rows': 6, 'counts': {0: 5, 2: 1}}  # no 'mid' in train
  counts = multiclass.class_counts(summary)
  assert counts == {0: 5, 1: 0, 2: 1}
  assert multiclass.train_label_summary(summary, counts) == {
      'train_label_counts': {
          'low': 5,
          'mid': 0,
          'high': 1
      }
  }
  regression = _head('regression')
  summary = {'rows': 3, 'mean': 2.5, 'std': 0.5}
  assert regression.class_counts(summary) == {}
  assert regression.train_label_summary(summary, {}) == {
      'train_label': {
          'mean': 2.5,
          'std': 0.5
      }
  }


def _binary_predictions(seed):
  rng = np.random.default_rng(seed)
  y = (rng.random(300) < 0.3).astype(np.float32)
  p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0.0, 1.0)
  return y, p


def test_binary_head_chooses_its_threshold_on_eval():
  head = _head('binary')
  predictions = {'eval': _binary_predictions(1), 'test': _binary_predictions(2)}
  hp = hparams.HParams(threshold_objective='max_f1')
  evaluation = head.evaluate(predictions, hp)
  m = evaluation.metrics
  selection = m['threshold_selection']
  assert selection['split'] == 'eval' and selection['objective'] == 'max_f1'
  assert evaluation.threshold == m['threshold'] == selection['threshold']
  assert evaluation.threshold != 0.5
  assert evaluation.metadata == {'threshold_selection': selection}
  # The best F1 on eval, among every threshold on eval's scores.
  y, p = predictions['eval']
  assert m['eval']['f1'] == pytest.approx(
      max(head.metrics(y, p, t)['f1'] for t in np.unique(p)))
  for split in ('eval', 'test'):
    assert m[split]['threshold'] == evaluation.threshold
    assert m['at_threshold_0.5'][split]['threshold'] == 0.5
    assert m['at_threshold_0.5'][split]['roc_auc'] == m[split]['roc_auc']
  assert head.export_threshold(evaluation.threshold) == evaluation.threshold
  assert head.label_fields() == {'positive_class': 'high'}

  # K-fold: chosen on the held-out fold, reference sets summarized too.
  fold = head.fold_metrics(
      {
          'test': predictions['test'],
          'cv': predictions['eval']
      }, hp, 'cv')
  assert fold['threshold'] == evaluation.threshold
  assert fold['test']['threshold'] == evaluation.threshold
  assert fold['cv_at_threshold_0.5']['threshold'] == 0.5
  assert head.fold_sets(['cv', 'test']) == [
      'cv', 'test', 'cv_at_threshold_0.5', 'test_at_threshold_0.5'
  ]

  text = head.format_results(dict(m, positive_class='high'), ['eval', 'test'])
  lines = text.splitlines()
  assert lines[0] == (f'trainer: threshold {evaluation.threshold:.4f} '
                      '(max_f1, chosen on eval)')
  assert 'at threshold 0.5 (reference):' in lines
  assert sum(line.startswith('confusion matrix [eval]') for line in lines) == 2


@pytest.mark.parametrize('task', ['multiclass', 'regression'])
def test_heads_without_a_threshold(task):
  head = _head(task)
  rng = np.random.default_rng(3)
  if task == 'multiclass':
    y = rng.integers(0, 3, 200)
    p = rng.dirichlet([1, 1, 1], 200) * 0.5 + np.eye(3)[y] * 0.5
  else:
    y = rng.normal(2.0, 1.0, 200)
    p = y + rng.normal(0, 0.3, 200)
  hp = hparams.HParams(threshold=0.3)
  evaluation = head.evaluate({'eval': (y, p)}, hp)
  assert set(evaluation.metrics) == {'eval'}
  assert evaluation.metrics['eval'] == head.metrics(y, p)
  assert evaluation.metadata == {}
  assert head.export_threshold(evaluation.threshold) is None
  assert head.label_fields() == {}
  assert head.metrics_through_export('unused', 'unused', hp, 0.3,
                                     ['eval']) == {}
  fold = head.fold_metrics({'cv': (y, p)}, hp, 'cv')
  assert set(fold) == {'cv', 'threshold'}
  assert head.fold_sets(['cv', 'test']) == ['cv', 'test']
  text = head.format_results(evaluation.metrics, ['eval'])
  assert 'threshold' not in text
  key, title, _ = head.table_rows()[1]
  assert title in text
  if task == 'multiclass':
    assert 'confusion matrix [eval] (rows: true, columns: predicted; low, ' \
           'mid, high)' in text
  else:
    assert 'RMSE (log)' in text  # a log_target label: both scales
    assert evaluation.metrics['eval']['rmse_log'] > 0
