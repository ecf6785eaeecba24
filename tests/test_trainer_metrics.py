"""Evaluation metrics and hyperparameter resolution: plain Python, no model."""

import itertools
import json
import math

import numpy as np
import pytest

from pipeline.errors import ConfigError
from trainer import evaluate, hparams


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
  expected_ll = -np.mean([math.log(0.9), math.log(0.6), math.log(0.4),
                          math.log(0.3), math.log(0.7), math.log(0.8),
                          math.log(0.9), math.log(0.5)])
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
  hp = hparams.resolve({'hidden_units': [64, 32], 'epochs': 7},
                       {'epochs': '3', 'deep_learning_rate': None,
                        'cache': False})
  assert hp.hidden_units == (64, 32)
  assert hp.epochs == 3
  assert hp.cache is False
  assert hp.deep_learning_rate == hparams.HParams().deep_learning_rate
  assert hparams.resolve({}, {'hidden_units': '128, 16'}).hidden_units == (
      128, 16)


def test_hparams_errors_name_the_key():
  with pytest.raises(ConfigError, match='model.hiden_units'):
    hparams.resolve({'hiden_units': [10]}, {})
  with pytest.raises(ConfigError, match='--epochs'):
    hparams.resolve({}, {'epochs': 'many'})
  with pytest.raises(ConfigError, match='wide_optimizer'):
    hparams.resolve({'wide_optimizer': 'lbfgs'}, {})
  with pytest.raises(ConfigError, match='threshold'):
    hparams.resolve({}, {'threshold': '1.5'})
