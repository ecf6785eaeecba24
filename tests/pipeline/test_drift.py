"""Drift and skew decisions sized to the sample (pipeline/drift.py).

Statistics are computed by TFDV from rows the project's parser read, with
fixed seeds; most tests need no Beam job. The last ones run `schema init`
and `preprocess` end to end on small generated files.
"""

import json
import os
import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl

from core.config import load_config
from pipeline import cleanse
from pipeline import drift
from pipeline import preprocess
from pipeline import schema as schema_cli
from pipeline import skew
from pipeline import stats_report
from pipeline import validation
from pipeline.sources import RawChunk
from tests import datagen
from tests.conftest import TOY_CONFIG

# ------------------------------------------------------------------ helpers


@pytest.fixture(scope='module')
def toy():
  return load_config(TOY_CONFIG)


def _batch(config, lines):
  batch, quarantine, _ = cleanse.RowParser(config).parse_chunk(
      RawChunk('rows', 1, 'csv',
               [l.encode() for l in [datagen.TOY_HEADER] + list(lines)]))
  assert not quarantine
  return batch


def _stats(batch):
  return stats_impl.generate_statistics_in_memory(batch, tfdv.StatsOptions())


def _df_stats(df):
  return tfdv.generate_statistics_from_dataframe(df)


def _drift(schema, train, other, rate=0.01):
  """(features flagged after the test, features TFDV alone flags), as the
  validation stage of preprocess decides."""
  stats = {'train': train, 'eval': other}
  results = validation.validate_splits(schema, stats)
  review = validation.review_splits(schema, stats, results, rate)
  rows = [r for n in stats for r in validation.anomaly_rows(results[n], n)]
  kept, _ = validation.reviewed_rows(rows, review)
  return {r.feature for r in kept}, {r.feature for r in rows}, review


def _split(lines, small, seed):
  rng = random.Random(seed)
  lines = list(lines)
  rng.shuffle(lines)
  k = int(len(lines) * small)
  return lines[k:], lines[:k]


def _toy_schema(config):
  """The schema `schema init` would draft for the toy data."""
  return validation.draft_schema(
      _stats(_batch(config, datagen.toy_rows(20_000, seed=99))), config)


# ------------------------------------------------------ the statistics used


def test_p_values_match_textbook_values():
  assert drift.chi2_sf([3.841459], [1])[0] == pytest.approx(0.05, abs=1e-6)
  assert drift.chi2_sf([21.666], [10])[0] == pytest.approx(0.0169, abs=1e-4)
  # P(X >= 2) for X ~ Binomial(10, 0.1) = 1 - 0.9^10 - 10 * 0.1 * 0.9^9
  assert drift.binomial_sf(2, 10, 0.1) == pytest.approx(0.263901, abs=1e-6)
  assert drift.binomial_sf(0, 10, 0.1) == 1.0
  # Fisher's exact test of [[1, 9], [11, 3]], two-sided.
  assert drift.fisher_exact(1, 9, 11, 3) == pytest.approx(0.002759, abs=1e-6)
  assert drift.fisher_exact(3, 3, 3, 3) == pytest.approx(1.0)
  # Kolmogorov: P(sqrt(n) D >= 1.358) = 0.05, asymptotically.
  assert drift.kolmogorov_sf(1.358 / 100, 10_000) == pytest.approx(
      0.05, abs=0.002)


def test_holm_decides_the_whole_run_together():

  def d(p, distance=1.0):
    return drift.Decision('f', drift.L_INFINITY, 'a', 'b', 10, 10, distance,
                          0.5, 'chi-squared', p)

  items = [d(0.001), d(0.004), d(0.02), d(0.3, distance=0.1), d(0.0001, 0.1)]
  drift.decide(items, 0.05)
  # Sorted, the p-values face 0.05/5, 0.05/4, 0.05/3, 0.05/2 and 0.05/1:
  # all but 0.3 pass. 0.0001 is significant but under its threshold.
  assert [x.verdict for x in items] == [
      drift.ANOMALY, drift.ANOMALY, drift.ANOMALY, drift.OK, drift.SMALL
  ]
  assert items[4].level == pytest.approx(0.01)
  # With a stricter rate the step-down stops at the first failure.
  drift.decide(items, 0.005)
  assert [x.verdict for x in items] == [
      drift.ANOMALY, drift.CHANCE, drift.CHANCE, drift.OK, drift.SMALL
  ]


def test_numeric_test_is_quiet_for_one_distribution_and_sees_shifts():
  rng = np.random.default_rng(4)

  def spiky(n):
    return np.where(rng.random(n) < 0.45, 40, rng.integers(1, 99, n))

  base = _df_stats(
      pd.DataFrame({
          'x': rng.normal(50, 10, 8000),
          'h': spiky(8000)
      }))
  same = _df_stats(
      pd.DataFrame({
          'x': rng.normal(50, 10, 2000),
          'h': spiky(2000)
      }))
  moved = _df_stats(
      pd.DataFrame({
          'x': rng.normal(52.5, 10, 2000),
          'h': spiky(2000) + 3
      }))

  def p(other, name):
    return drift.numeric_test(
        drift.feature_map(base.datasets[0])[name],
        drift.feature_map(other.datasets[0])[name])

  assert p(same, 'x') > 0.01 and p(same, 'h') > 0.01
  # A quarter of a standard deviation, and a spike moved by 3.
  assert p(moved, 'x') < 1e-6
  assert p(moved, 'h') < 1e-6


# ------------------------------------------------ one population, any size


@pytest.mark.parametrize('rows', [200, 20_000])
def test_random_splits_of_one_file_pass(toy, rows):
  schema = _toy_schema(toy)
  raw_flags = 0
  for seed in range(3):
    train, other = _split(datagen.toy_rows(rows, seed=seed), 0.2, seed)
    train_stats = _stats(_batch(toy, train))
    other_batch = _batch(toy, other)
    flagged, raw, review = _drift(schema, train_stats, _stats(other_batch))
    assert flagged == set(), [(d.feature, d.check, d.distance, d.p_value)
                              for d in review.decisions
                              if d.flagged]
    raw_flags += bool(raw)
    serving = _stats(_without_label(other_batch))
    result = skew.check_skew(train_stats, serving, schema)
    assert result.anomalies == [], result.anomalies
    # Every decision carries the sizes it was made at: the rows with a
    # value on each side.
    for d in result.measurements:
      assert 0.8 * 0.8 * rows < d.baseline_rows <= 0.8 * rows
      assert 0 < d.compared_rows <= 0.2 * rows and d.p_value is not None
  if rows == 200:
    # TFDV's fixed thresholds alone flag these random splits: the test is
    # what keeps them quiet.
    assert raw_flags >= 2


def _without_label(batch):
  keep = [n for n in batch.schema.names if n != 'outcome']
  return pa.RecordBatch.from_arrays([batch.column(n) for n in keep], keep)


def test_large_shifts_are_flagged_exactly(toy):
  schema = _toy_schema(toy)
  train, other = _split(datagen.toy_rows(10_000, seed=5), 0.2, 5)
  shifted = []
  rng = random.Random(1)
  for i, line in enumerate(other):
    f = [v.strip() for v in line.split(',')]
    if i % 2 == 0:
      f[2] = 'oslo'  # the share of one city moves by about 40 points
    if f[0] not in ('?', '', 'NA'):
      f[0] = str(float(f[0]) * 2)  # height doubled
    if rng.random() < 0.3:
      f[1] = ''  # visits: 30% more missing
    shifted.append(', '.join(f))
  train_stats = _stats(_batch(toy, train))
  flagged, _, review = _drift(schema, train_stats, _stats(_batch(toy, shifted)))
  assert flagged == {'city', 'height', 'visits'}
  by = {
      (d.feature, d.check.split(' (')[0]): d
      for d in review.decisions
      if d.compared == 'eval'
  }
  assert by[('city', drift.L_INFINITY)].verdict == drift.ANOMALY
  assert by[('height', drift.JENSEN_SHANNON)].verdict == drift.ANOMALY
  assert by[('visits', drift.MISSING_SHARE)].verdict == drift.ANOMALY
  # visits' values did not move: only their presence did.
  assert by[('visits', drift.JENSEN_SHANNON)].verdict in (drift.OK,
                                                          drift.CHANCE)
  result = skew.check_skew(train_stats,
                           _stats(_without_label(_batch(toy, shifted))), schema)
  assert {r.feature for r in result.anomalies} == {'city', 'height', 'visits'}
  assert 'MISSING_SHARE_CHANGED' in {r.type for r in result.anomalies}
  # The report: the decision table, and each flagged feature's training and
  # serving distributions side by side.
  page = stats_report.render(
      'toy', [('training', validation.dataset(train_stats)),
              ('serving', validation.dataset(_stats(_batch(toy, shifted))))],
      anomalies=result.anomalies,
      measurements={
          'skew': result.measurements + result.review.missing_shares('serving')
      })
  assert 'training rows' in page and 'needed below' in page
  for feature, check in (('city', 'L-infinity'), ('height',
                                                  'Jensen-Shannon divergence'),
                         ('visits', 'missing share')):
    assert f'{feature} <small>{check}' in page


def test_threshold_is_the_smallest_effect_worth_flagging():
  """A 2-point share change in 400,000 rows is real, and under the 3-point
  threshold: reported as small, not an anomaly."""
  rng = np.random.default_rng(0)
  a = _df_stats(
      pd.DataFrame({'c': rng.choice(['x', 'y'], 200_000, p=[0.5, 0.5])}))
  b = _df_stats(
      pd.DataFrame({'c': rng.choice(['x', 'y'], 200_000, p=[0.52, 0.48])}))
  schema = tfdv.infer_schema(a)
  schema.feature[0].drift_comparator.infinity_norm.threshold = 0.03
  anomalies = tfdv.validate_statistics(b, schema, previous_statistics=a)
  decisions = drift.compare(a.datasets[0], b.datasets[0], schema, anomalies,
                            'drift', ('train', 'eval'))
  drift.decide(decisions)
  (d,) = decisions
  assert d.p_value < 1e-20 and d.distance == pytest.approx(0.02, abs=0.005)
  assert d.verdict == drift.SMALL and not d.flagged


def test_schema_shares_are_judged_at_the_sample_size():
  """presence.min_fraction 0.9: 2 missing of 10 is chance, 300 of 1000 is
  not; TFDV flags both."""

  def stats(missing, n):
    return _df_stats(
        pd.DataFrame({'c': ['a'] * (n - missing) + [None] * missing}))

  schema = tfdv.infer_schema(stats(0, 10), infer_feature_shape=False)
  schema.feature[0].presence.min_fraction = 0.9
  for missing, n, verdict in ((2, 10, drift.CHANCE), (300, 1000,
                                                      drift.ANOMALY)):
    s = stats(missing, n)
    anomalies = tfdv.validate_statistics(s, schema)
    assert 'c' in anomalies.anomaly_info
    review = drift.review([], [(s.datasets[0], 'serving')], schema)
    (d,) = review.decisions
    assert d.check == drift.PRESENCE and d.verdict == verdict
    rows = validation.anomaly_rows(anomalies, 'serving')
    kept, dismissed = validation.reviewed_rows(rows, review)
    assert bool(kept) == (verdict == drift.ANOMALY)
    assert bool(dismissed) == (verdict == drift.CHANCE)


def test_false_alarm_rate_comes_from_the_config(tmp_path):
  text = open(TOY_CONFIG, encoding='utf-8').read()
  assert load_config(TOY_CONFIG).false_alarm_rate == 0.01
  path = tmp_path / 'toy.yaml'
  path.write_text(
      text + '\nvalidation: {false_alarm_rate: 0.05}\n', encoding='utf-8')
  assert load_config(str(path)).false_alarm_rate == 0.05
  path.write_text(
      text + '\nvalidation: {false_alarm_rate: 2}\n', encoding='utf-8')
  with pytest.raises(Exception, match='false_alarm_rate'):
    load_config(str(path))


# --------------------------------------- schema init, then preprocess: ok


@pytest.mark.parametrize('rows', [300, 1000])
def test_schema_init_then_preprocess_publishes(tmp_path, capsys, rows):
  data = datagen.write_lines(
      str(tmp_path / 'trips.csv'),
      datagen.trip_rows(rows, seed=21),
      header=datagen.TRIP_HEADER)
  out = str(tmp_path / 'schemas' / 'trips.yaml')
  assert schema_cli.main(
      ['init', '--input', data, '--label', 'tipped', '--output', out]) == 0
  pp = str(tmp_path / 'pp')
  manifest = preprocess.run(
      ['--config', out, '--input', data, '--output-dir', pp])
  assert manifest['rows']['train'] + manifest['rows']['eval'] == rows
  printed = capsys.readouterr().out
  with open(os.path.join(pp, validation.ANOMALIES_FILE), encoding='utf-8') as f:
    doc = json.load(f)
  assert doc['status'] == 'ok' and doc['anomalies'] == []
  assert doc['false_alarm_rate'] == 0.01 and doc['tests'] > 0
  # The table printed and recorded: sizes, distance, threshold, p-value.
  for item in doc['drift']['eval']:
    assert item['baseline_rows'] > item['compared_rows'] > 0
    assert item['p_value'] is not None and item['verdict'] != 'anomaly'
  assert 'preprocess: drift eval vs train' in printed
  assert 'p-value' in printed and 'train rows' in printed
