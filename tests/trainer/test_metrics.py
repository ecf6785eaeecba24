"""Evaluation metrics and hyperparameter resolution: plain Python, no model."""

import itertools
import json
import math

import numpy as np
import pytest

from core.errors import ConfigError
from trainer import evaluate
from trainer import hparams


def _pairwise_auc(labels, scores):
  """AUC by definition: P(score_pos > score_neg) + P(tie) / 2."""
  pos = [s for s, y in zip(scores, labels) if y]
  neg = [s for s, y in zip(scores, labels) if not y]
  wins = sum(1.0 if p > n else 0.5 if p == n else 0.0
             for p, n in itertools.product(pos, neg))
  return wins / (len(pos) * len(neg))


def _brute_average_precision(labels, scores):
  """AP by definition over distinct thresholds, highest first."""
  labels, scores = np.asarray(labels, bool), np.asarray(scores)
  ap, prev_recall = 0.0, 0.0
  for t in sorted(set(scores.tolist()), reverse=True):
    pred = scores >= t
    tp = np.sum(pred & labels)
    precision = tp / pred.sum()
    recall = tp / labels.sum()
    ap += (recall - prev_recall) * precision
    prev_recall = recall
  return ap


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_roc_and_pr_auc_match_their_definitions_with_ties(seed):
  rng = np.random.default_rng(seed)
  labels = rng.random(300) < 0.3
  # Rounded scores: many ties, which is where rank-based shortcuts go wrong.
  scores = np.round(rng.random(300) * 0.5 + labels * 0.3, 1)
  assert evaluate.roc_auc(labels, scores) == pytest.approx(
      _pairwise_auc(labels, scores), abs=1e-12)
  assert evaluate.pr_auc(labels, scores) == pytest.approx(
      _brute_average_precision(labels, scores), abs=1e-12)


def test_perfect_and_inverted_rankings():
  y = np.array([0, 0, 1, 1])
  assert evaluate.roc_auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
  assert evaluate.roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
  assert evaluate.roc_auc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5
  assert evaluate.pr_auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
  assert math.isnan(evaluate.roc_auc([1, 1], [0.2, 0.3]))


def test_binary_metrics_at_threshold():
  y = [1, 1, 1, 0, 0, 0, 0, 0]
  p = [0.9, 0.6, 0.4, 0.7, 0.3, 0.2, 0.1, 0.5]
  m = evaluate.binary_metrics(y, p, threshold=0.5)
  # p >= 0.5 is positive: predictions 1,1,0,1,0,0,0,1.
  assert m['confusion_matrix'] == {'tn': 3, 'fp': 2, 'fn': 1, 'tp': 2}
  assert m['accuracy'] == pytest.approx(5 / 8)
  assert m['precision'] == pytest.approx(2 / 4)
  assert m['recall'] == pytest.approx(2 / 3)
  assert m['f1'] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
  assert m['base_rate'] == pytest.approx(3 / 8)
  assert m['threshold'] == 0.5
  expected_ll = -np.mean([
      math.log(0.9),
      math.log(0.6),
      math.log(0.4),
      math.log(0.3),
      math.log(0.7),
      math.log(0.8),
      math.log(0.9),
      math.log(0.5)
  ])
  assert m['log_loss'] == pytest.approx(expected_ll)
  m2 = evaluate.binary_metrics(y, p, threshold=0.65)
  assert m2['confusion_matrix'] == {'tn': 4, 'fp': 1, 'fn': 2, 'tp': 1}


def test_metrics_file_and_table(tmp_path):
  m = evaluate.binary_metrics([1, 1], [0.9, 0.8], 0.5)  # one class: AUC NaN
  path = str(tmp_path / 'metrics.json')
  evaluate.write_metrics(path, {'eval': m})
  with open(path) as f:
    doc = json.load(f)  # strict JSON: NaN written as null
  assert doc['eval']['roc_auc'] is None
  table = evaluate.format_table({'eval': m, 'test': m})
  assert 'ROC AUC' in table and 'n/a' in table and 'test' in table


def test_hparams_defaults_config_then_flags():
  hp = hparams.resolve({
      'hidden_units': [64, 32],
      'epochs': 7
  }, {
      'epochs': '3',
      'deep_learning_rate': None,
      'cache': False
  })
  assert hp.hidden_units == (64, 32)
  assert hp.epochs == 3
  assert hp.cache is False
  assert hp.deep_learning_rate == hparams.HParams().deep_learning_rate
  assert hparams.resolve({}, {
      'hidden_units': '128, 16'
  }).hidden_units == (128, 16)


def test_hparams_errors_name_the_key():
  with pytest.raises(ConfigError, match='model.hiden_units'):
    hparams.resolve({'hiden_units': [10]}, {})
  with pytest.raises(ConfigError, match='--epochs'):
    hparams.resolve({}, {'epochs': 'many'})
  with pytest.raises(ConfigError, match='wide_optimizer'):
    hparams.resolve({'wide_optimizer': 'lbfgs'}, {})
  with pytest.raises(ConfigError, match='threshold'):
    hparams.resolve({}, {'threshold': '1.5'})


# ----------------------------------------------------- threshold selection


def _brute_points(labels, scores):
  """(threshold, precision, recall, f1) for every distinct score."""
  labels, scores = np.asarray(labels, bool), np.asarray(scores)
  out = []
  for t in sorted(set(scores.tolist()), reverse=True):
    pred = scores >= t
    tp = np.sum(pred & labels)
    precision = tp / pred.sum()
    recall = tp / labels.sum()
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    out.append((t, precision, recall, f1))
  return out


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_threshold_objectives_match_brute_force(seed):
  rng = np.random.default_rng(seed)
  labels = rng.random(400) < 0.25
  scores = np.round(
      np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0.001, 0.999),
      2)  # ties included
  points = _brute_points(labels, scores)

  best = max(points, key=lambda p: (p[3], p[0]))
  sel = evaluate.choose_threshold(labels, scores, 'max_f1')
  assert sel['threshold'] == pytest.approx(best[0])
  assert sel['f1'] == pytest.approx(best[3])
  assert sel['objective'] == 'max_f1' and sel['reached']
  # No other threshold does better on these predictions.
  for t, _, _, _ in points:
    assert evaluate.binary_metrics(labels, scores, t)['f1'] <= sel['f1'] + 1e-12

  for target in (0.6, 0.75):
    sel = evaluate.choose_threshold(labels, scores, 'precision', target)
    ok = [p for p in points if p[1] >= target]
    assert sel['threshold'] == pytest.approx(min(p[0] for p in ok))
    assert sel['precision'] >= target and sel['target'] == target
    assert sel['recall'] == pytest.approx(max(p[2] for p in ok))

    sel = evaluate.choose_threshold(labels, scores, 'recall', target)
    ok = [p for p in points if p[2] >= target]
    assert sel['threshold'] == pytest.approx(max(p[0] for p in ok))
    assert sel['recall'] >= target
    assert sel['precision'] == pytest.approx(
        [p[1] for p in ok if p[0] == max(q[0] for q in ok)][0])

  sel = evaluate.choose_threshold(labels, scores, 'fixed', fixed=0.42)
  assert sel['threshold'] == 0.42
  m = evaluate.binary_metrics(labels, scores, 0.42)
  assert (sel['precision'], sel['recall']) == (m['precision'], m['recall'])


def test_unreachable_precision_target_is_reported():
  labels = [0, 1, 0, 1, 0]
  scores = [0.9, 0.8, 0.7, 0.6, 0.5]  # best precision anywhere is 0.5
  sel = evaluate.choose_threshold(labels, scores, 'precision', 0.9)
  assert not sel['reached']
  assert sel['precision'] == pytest.approx(0.5)
  assert evaluate.choose_threshold(labels, scores, 'precision', 0.4)['reached']
  with pytest.raises(ValueError, match='objective'):
    evaluate.choose_threshold(labels, scores, 'max_accuracy')


def test_roc_curve_area_is_the_auc_and_pr_curve_ends_at_full_recall():
  rng = np.random.default_rng(5)
  labels = rng.random(500) < 0.3
  scores = np.round(rng.random(500) * 0.6 + labels * 0.3, 2)
  roc = evaluate.roc_curve(labels, scores)
  assert (roc['fpr'][0], roc['tpr'][0]) == (0.0, 0.0)
  assert (roc['fpr'][-1], roc['tpr'][-1]) == (1.0, 1.0)
  assert np.all(np.diff(roc['fpr']) >= 0) and np.all(np.diff(roc['tpr']) >= 0)
  # The trapezoid area of the tied-points curve is the ties-as-half AUC.
  area = np.sum(np.diff(roc['fpr']) * (roc['tpr'][1:] + roc['tpr'][:-1]) / 2)
  assert area == pytest.approx(evaluate.roc_auc(labels, scores), abs=1e-12)
  pr = evaluate.pr_curve(labels, scores)
  assert pr['recall'][-1] == 1.0
  assert pr['precision'][-1] == pytest.approx(labels.mean())


def test_calibration_bins_and_error():
  y = [0, 0, 1, 1, 1, 0, 1, 1]
  p = [0.05, 0.15, 0.15, 0.55, 0.55, 0.95, 0.95, 0.95]
  c = evaluate.calibration(y, p, bins=10)
  assert c['bin'] == [0, 1, 5, 9]
  assert c['rows'] == [1, 2, 2, 3]
  assert c['observed_rate'] == pytest.approx([0.0, 0.5, 1.0, 2 / 3])
  assert c['mean_predicted'] == pytest.approx([0.05, 0.15, 0.55, 0.95])
  expected = (1 * 0.05 + 2 * 0.35 + 2 * 0.45 + 3 * abs(0.95 - 2 / 3)) / 8
  assert evaluate.expected_calibration_error(y, p) == pytest.approx(expected)
  assert evaluate.binary_metrics(y, p, 0.5)['calibration_error'] == (
      pytest.approx(expected))
  # p = 1.0 falls in the last bin, not past it.
  assert evaluate.calibration([1], [1.0])['bin'] == [9]


def test_fold_summary_and_table():
  folds = [{
      'accuracy': 0.8,
      'rows': 10,
      'confusion_matrix': {}
  }, {
      'accuracy': 0.9,
      'rows': 12,
      'confusion_matrix': {}
  }, {
      'accuracy': 0.7,
      'rows': 11,
      'confusion_matrix': {}
  }]
  s = evaluate.summarize_folds(folds)
  assert set(s) == {'accuracy', 'rows'}
  assert s['accuracy']['mean'] == pytest.approx(0.8)
  assert s['accuracy']['std'] == pytest.approx(0.1)  # sample std (ddof=1)
  assert (s['rows']['min'], s['rows']['max']) == (10, 12)
  m = evaluate.binary_metrics([0, 1, 1], [0.2, 0.7, 0.4], 0.5)
  table = evaluate.format_fold_table({'cv': evaluate.summarize_folds([m, m])})
  assert 'accuracy' in table and '0.6667 ± 0.0000' in table


def test_imbalance_threshold_and_model_type_hparams():
  hp = hparams.resolve(
      {
          'class_weight': 'Balanced',
          'oversample': 0.5,
          'model_type': 'deep',
          'slices': ['a', 'b']
      }, {
          'threshold_objective': 'precision',
          'threshold_target': '0.9',
          'lr_schedule': 'cosine'
      })
  assert hp.class_weight == 'balanced' and hp.oversample == 0.5
  assert hp.model_type == 'deep' and hp.slices == ('a', 'b')
  assert hp.threshold_objective == 'precision' and hp.threshold_target == 0.9
  assert hp.to_json()['slices'] == ['a', 'b']
  assert hparams.resolve({}, {'class_weight': '3'}).class_weight == '3'
  assert hparams.resolve({}, {'slices': 'sex, age'}).slices == ('sex', 'age')
  defaults = hparams.HParams()
  assert defaults.threshold_objective == 'max_f1'
  assert defaults.class_weight == 'none' and defaults.oversample == 0.0
  assert defaults.model_type == 'wide_deep'
  with pytest.raises(ConfigError, match='model_type.*wide_deep, wide, deep'):
    hparams.resolve({'model_type': 'linear'}, {})
  with pytest.raises(ConfigError, match='--class-weight.*balanced'):
    hparams.resolve({}, {'class_weight': '-2'})
  with pytest.raises(ConfigError, match='class_weight'):
    hparams.resolve({'class_weight': 'heavy'}, {})
  with pytest.raises(ConfigError, match='oversample'):
    hparams.resolve({'oversample': 1.0}, {})
  with pytest.raises(ConfigError, match='threshold_objective'):
    hparams.resolve({}, {'threshold_objective': 'max_accuracy'})
  with pytest.raises(ConfigError, match='threshold_target'):
    hparams.resolve({'threshold_target': 0}, {})
  with pytest.raises(ConfigError, match='lr_schedule'):
    hparams.resolve({'lr_schedule': 'step'}, {})
