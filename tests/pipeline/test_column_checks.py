"""pipeline.column_checks: the rules behind drafted configs and warnings."""

import collections
import random

import numpy as np
import pytest

from pipeline import column_checks as cc


def _binary(n, seed, rate=0.3):
  rng = random.Random(seed)
  return rng, [1 if rng.random() < rate else 0 for _ in range(n)]


def test_roc_auc_counts_ties_as_half():
  assert cc.roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1,
                                                               1])) == 0.75
  assert cc.roc_auc(np.array([1, 2, 3, 4]), np.array([0, 0, 1, 1])) == 1.0
  assert cc.roc_auc(np.array([4, 3, 2, 1]), np.array([0, 0, 1, 1])) == 0.0
  assert cc.roc_auc(np.array([1, 1, 1, 1]), np.array([0, 1, 0, 1])) == 0.5
  assert np.isnan(cc.roc_auc(np.array([1, 2]), np.array([1, 1])))


def test_a_column_computed_from_a_binary_label_is_a_leak():
  rng, y = _binary(2000, 1)
  leak = [(3.5 if l else 0.0) + rng.gauss(0, 0.8) for l in y]
  genuine = [0.8 * l + rng.gauss(0, 1) for l in y]
  score = cc.leakage_score(leak, y, cc.BINARY, numeric=True)
  assert score.metric == 'AUC' and score.leaks and score.value > 0.99
  score = cc.leakage_score(genuine, y, cc.BINARY, numeric=True)
  assert 0.6 < score.value < 0.8 and not score.leaks
  # Reversed (a leak that falls as the label rises) is a leak too.
  assert cc.leakage_score([-v for v in leak], y, cc.BINARY, numeric=True).leaks


def test_leaks_that_are_not_monotone_or_not_numbers_are_found():
  rng, y = _binary(2000, 2)
  # Positives in the middle of the range: no order separates them.
  middle = [
      rng.gauss(0, 0.2) if l else rng.choice([-3, 3]) + rng.gauss(0, 0.2)
      for l in y
  ]
  assert cc.leakage_score(middle, y, cc.BINARY, numeric=True).leaks
  # A category that is the label under another spelling.
  spelled = [rng.choice(['t', 'tip']) if l else 'none' for l in y]
  assert cc.leakage_score(spelled, y, cc.BINARY, numeric=False).leaks


def test_a_unique_value_per_row_cannot_score_by_memorising_rows():
  _, y = _binary(1000, 3)
  ids = [f'row{i}' for i in range(1000)]
  score = cc.leakage_score(ids, y, cc.BINARY, numeric=False)
  assert score.value == pytest.approx(0.5, abs=0.05)
  targets = [float(i % 7) for i in range(1000)]
  assert cc.leakage_score(
      ids, targets, cc.REGRESSION, numeric=False).value < 0.05


def test_missing_values_are_a_group_of_their_own():
  rng, y = _binary(2000, 4)
  # Present exactly when the label is positive: missingness is the leak.
  only_when_positive = [rng.random() if l else None for l in y]
  assert cc.leakage_score(only_when_positive, y, cc.BINARY, numeric=True).leaks
  # Missing at random with a weak signal: no leak.
  weak = [None if rng.random() < 0.3 else 0.5 * l + rng.gauss(0, 1) for l in y]
  assert not cc.leakage_score(weak, y, cc.BINARY, numeric=True).leaks


def test_regression_leaks_score_r2():
  rng = random.Random(5)
  y = [rng.lognormvariate(2, 0.5) for _ in range(2000)]
  linear = [1.1 * v + rng.gauss(0, 0.3) for v in y]
  score = cc.leakage_score(linear, y, cc.REGRESSION, numeric=True)
  assert score.metric == 'R²' and score.value > 0.95 and score.leaks
  # y = (x - 5)^2: a function of x, but not a monotone one.
  y_big = [rng.lognormvariate(2, 0.5) for _ in range(5000)]
  either_side = [5 + rng.choice([-1, 1]) * v**0.5 for v in y_big]
  assert cc.leakage_score(either_side, y_big, cc.REGRESSION, numeric=True).leaks
  # (y - 8)^2 is not a leak: it does not tell which side of 8 y is on.
  squared = [(v - 8)**2 for v in y]
  assert not cc.leakage_score(squared, y, cc.REGRESSION, numeric=True).leaks
  noisy = [v + rng.gauss(0, 4) for v in y]
  assert not cc.leakage_score(noisy, y, cc.REGRESSION, numeric=True).leaks


def test_multiclass_leaks_score_the_mean_one_vs_rest_auc():
  rng = random.Random(6)
  y = [rng.randrange(4) for _ in range(2000)]
  leak = [c + rng.gauss(0, 0.1) for c in y]
  score = cc.leakage_score(leak, y, cc.MULTICLASS, numeric=True)
  assert score.metric == 'AUC' and score.leaks
  names = [['low', 'mid', 'high', 'top'][c] for c in y]
  assert cc.leakage_score(names, y, cc.MULTICLASS, numeric=False).leaks
  noise = [rng.random() for _ in y]
  assert cc.leakage_score(noise, y, cc.MULTICLASS, numeric=True).value < 0.6


def test_too_few_rows_or_one_class_cannot_say():
  assert cc.leakage_score([1.0] * 10, [0, 1] * 5, cc.BINARY, True) is None
  assert cc.leakage_score(list(range(100)), [1] * 100, cc.BINARY, True) is None
  # Rows without a label are left out.
  y = [float('nan')] * 90 + [0, 1] * 5
  assert cc.leakage_score(list(range(100)), y, cc.BINARY, True) is None


def test_identifiers():
  n = 500
  ids = cc.identifier(
      'trip_id', 'int', n, n,
      collections.Counter(random.Random(0).sample(range(10**9), n)))
  assert ids.check == cc.IDENTIFIER and '"id" in the name' in ids.detail
  rows = cc.identifier('row', 'int', n, n,
                       collections.Counter(range(100, 100 + n)))
  assert rows is not None and 'consecutive integers' in rows.detail
  # Amounts and epoch seconds are unique per row too, and are not ids.
  cents = collections.Counter(random.Random(1).sample(range(10**7), n))
  assert cc.identifier('amount_cents', 'int', n, n, cents) is None
  assert cc.identifier('uuid', 'string', n, n) is not None
  assert cc.identifier('shop', 'string', n, n // 2) is None
  assert cc.identifier('price', 'float', n, n) is None
  assert cc.identifier('x', 'string', 10, 10) is None  # too few rows


def test_integer_codes():
  rng = random.Random(7)
  areas = [
      3, 8, 24, 32, 41, 76, 77, 105, 118, 230, 256, 317, 422, 508, 590, 611,
      707, 812, 903, 950
  ]
  sampled = collections.Counter(rng.choice(areas) for _ in range(2000))
  code = cc.integer_code('pickup_area', sampled)
  assert code.check == cc.INTEGER_CODE
  assert '20 distinct values' in code.detail
  assert '"area" in the name' in code.detail
  assert 'spread over' in code.detail
  # Scattered values are a code even without a name that says so.
  assert cc.integer_code('k', sampled) is not None
  # A name that says so makes consecutive values a code too.
  types = collections.Counter(rng.randint(1, 5) for _ in range(2000))
  assert cc.integer_code('vehicle_type', types) is not None
  # Quantities stay numbers: counts (even with a long tail), years,
  # many-valued amounts, and two values.
  assert cc.integer_code('vehicles', types) is None
  tail = collections.Counter(int(rng.paretovariate(1.0)) for _ in range(2000))
  assert max(tail) > 3 * len(tail)  # sparse over its whole range
  assert cc.integer_code('miles', tail) is None
  years = collections.Counter(rng.randint(1990, 2020) for _ in range(2000))
  assert cc.integer_code('year', years) is None
  amounts = collections.Counter(rng.randint(0, 10**6) for _ in range(2000))
  assert cc.integer_code('amount', amounts) is None
  assert cc.integer_code('flag_code', collections.Counter({
      0: 900,
      1: 100
  })) is None


def test_name_words():
  assert cc.name_words('pickupAreaID') == ['pickup', 'area', 'id']
  assert cc.name_words('zip_code5') == ['zip', 'code']
  assert cc.name_words('TRACT') == ['tract']


def test_findings_read_as_sentences():
  leak = cc.leakage('tip', cc.Score('AUC', 0.9991), cc.DRAFT_ADVICE)
  assert leak.detail == ('`tip` alone predicts the label with AUC 0.999: '
                         'likely leakage; add it back under `features:` if '
                         'it is really known at serving time')
  assert leak.to_json() == {
      'column': 'tip',
      'check': 'leakage',
      'reason': 'leakage: AUC 0.999 alone',
      'detail': leak.detail,
      'score': 0.9991
  }
  assert cc.constant('v', b'acme').reason == "constant: 'acme'"
  assert cc.constant(
      'v', 3.0, missing=4, imputed=True).detail == (
          "v has the one value '3' (its 4 missing values are imputed to it): "
          'nothing to learn from')
  assert cc.empty('notes', 1500).detail == (
      'notes has no value in the 1,500 sampled rows: nothing to learn from')
