"""python -m pipeline.skew on the real Adult run: clean data, shifted data,
unseen values, missing columns, and inputs that are not serving data at all.

The training side is the session's real preprocess run (adult_preprocessed);
the serving side is built from adult.test, a sample of the same population.
"""

import glob
import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys

import pytest

from pipeline import skew
from pipeline import validation
from tests.conftest import ROOT
from tests.conftest import signal_when

CENSUS_COLUMNS = [
    'age', 'workclass', 'fnlwgt', 'education', 'education_num',
    'marital_status', 'occupation', 'relationship', 'race', 'sex',
    'capital_gain', 'capital_loss', 'hours_per_week', 'native_country',
    'income_bracket'
]
LABEL = 'income_bracket'
FEATURES = [c for c in CENSUS_COLUMNS if c != LABEL]
NUMERIC = {
    'age', 'fnlwgt', 'education_num', 'capital_gain', 'capital_loss',
    'hours_per_week'
}


@pytest.fixture(scope='module')
def adult_test_rows(adult_dir):
  """adult.test as dicts of raw feature values; '?' (missing) left out."""
  rows = []
  with open(os.path.join(adult_dir, 'adult.test'), encoding='utf-8') as f:
    for line in f:
      if not line.strip() or line.startswith('|'):
        continue
      values = [v.strip() for v in line.rstrip('\n').split(',')]
      row = {}
      for name, value in zip(CENSUS_COLUMNS, values):
        if value == '?' or name == LABEL:
          continue
        row[name] = int(value) if name in NUMERIC else value
      rows.append(row)
  assert len(rows) == 16281
  return rows


def write_request_log(path, rows):
  """The serving request log: one JSON line per served instance."""
  with open(path, 'w', encoding='utf-8') as f:
    for i, row in enumerate(rows):
      f.write(
          json.dumps({
              'time': f'2026-11-22T10:{i // 60 % 60:02d}:{i % 60:02d}Z',
              'model_version': '1732270000',
              'features': row,
              'prediction': {
                  'probabilities': [0.3],
                  'classes': ['<=50K']
              },
          }) + '\n')
  return path


def run_skew(preprocess_dir, serving, report_dir, *extra):
  """Runs the command in-process; returns (exit code, skew.json or None)."""
  code = skew.main([
      '--preprocess-dir', preprocess_dir, '--serving-data',
      str(serving), '--report-dir',
      str(report_dir), *extra
  ])
  path = os.path.join(str(report_dir), skew.SKEW_JSON)
  doc = None
  if code != 2:
    with open(path, encoding='utf-8') as f:
      doc = json.load(f)
  return code, doc


def flagged_features(doc):
  return {a['feature'] for a in doc['anomalies']}


def skewed_features(doc):
  return {m['feature'] for m in doc['features'] if m['flagged']}


def types_of(doc, feature):
  return {a['type'] for a in doc['anomalies'] if a['feature'] == feature}


# ------------------------------------------------------------- same population


def test_adult_test_vs_adult_data_has_no_skew(adult_preprocessed, adult_dir,
                                              tmp_path, capsys):
  out, _ = adult_preprocessed
  code, doc = run_skew(out, os.path.join(adult_dir, 'adult.test'),
                       tmp_path / 'r')
  printed = capsys.readouterr().out
  assert code == 0, doc['anomalies']
  assert doc['status'] == 'ok' and doc['anomalies'] == []
  assert doc['serving_data']['rows_used'] == 16281
  # Every raw feature was compared, each under its curated threshold; the
  # label is not a serving feature and has no skew comparator.
  measured = {m['feature']: m for m in doc['features']}
  assert set(measured) == set(FEATURES)
  for m in measured.values():
    assert 0 <= m['value'] <= m['threshold'], m
  comparators = {m['feature']: m['comparator'] for m in doc['features']}
  assert comparators['age'] == 'Jensen-Shannon divergence'
  assert comparators['occupation'] == 'L-infinity'
  assert 'hours_per_week' in printed and 'threshold' in printed
  # Each row says what the decision was made on: the rows with a value on
  # each side, the chance of so large a difference, and the verdict.
  for m in measured.values():
    assert m['baseline_rows'] > 20000 and 15000 < m['compared_rows'] <= 16281
    assert 0 <= m['p_value'] <= 1 and m['verdict'] in ('ok', 'small')
  missing = {m['feature'] for m in doc['missing_share']}
  assert missing == {'workclass', 'occupation', 'native_country'}
  assert 'p-value' in printed and 'serving rows' in printed
  assert doc['false_alarm_rate'] == 0.01
  assert os.path.getsize(tmp_path / 'r' / skew.SKEW_HTML) > 10000
  assert os.path.exists(tmp_path / 'r' / skew.SERVING_STATS)


def test_the_report_replaces_an_earlier_one_whole_or_not_at_all(
    adult_preprocessed, adult_dir, tmp_path):
  """A run stopped half-way leaves the earlier report as it was (not mixed
  with part of its own); a finished one replaces the report's files and
  leaves the directory's other files alone."""
  out, _ = adult_preprocessed
  report = tmp_path / 'r'
  test_rows = os.path.join(adult_dir, 'adult.test')
  run_skew(out, test_rows, report)
  (report / 'notes.txt').write_text('mine')
  before = {p.name: p.read_bytes() for p in report.iterdir()}
  assert set(before) == set(skew.REPORT_FILES) | {'notes.txt'}

  args = [
      sys.executable, '-m', 'pipeline.skew', '--preprocess-dir', out,
      '--serving-data', test_rows, '--report-dir',
      str(report)
  ]
  with open(tmp_path / 'stderr.txt', 'w') as err:
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL,
        stderr=err)
  # Once the statistics are written, about a second before the report is
  # complete.
  code = signal_when(
      proc, lambda: bool(glob.glob(f'{report}.tmp-*/{skew.SERVING_STATS}')),
      signal.SIGTERM, lambda: (tmp_path / 'stderr.txt').read_text()[-3000:])
  assert code == 143, (tmp_path / 'stderr.txt').read_text()[-3000:]
  assert (tmp_path / 'stderr.txt').read_text() == 'skew: stopped by SIGTERM\n'
  assert {p.name: p.read_bytes() for p in report.iterdir()} == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ['r', 'stderr.txt']

  code, doc = run_skew(out, test_rows, report, '--false-alarm-rate', '0.02')
  assert code == 0 and doc['false_alarm_rate'] == 0.02
  assert {p.name for p in report.iterdir()} == set(before)
  assert (report / 'notes.txt').read_text() == 'mine'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['r', 'stderr.txt']


def test_raw_tfrecords_are_serving_data_too(adult_preprocessed, tmp_path):
  """raw/test-*.tfrecord.gz: tf.Examples of the same rows, label included."""
  out, _ = adult_preprocessed
  shards = sorted(glob.glob(os.path.join(out, 'raw', 'test-*.tfrecord.gz')))
  code, doc = run_skew(out, shards[0], tmp_path / 'r')
  assert code == 0, doc['anomalies']
  assert doc['serving_data']['formats'] == ['tfrecord']
  assert doc['serving_data']['rows_used'] > 3000


# ------------------------------------------------------------ synthetic skew


def test_shifted_categorical_and_doubled_numeric_are_exactly_flagged(
    adult_preprocessed, adult_test_rows, tmp_path, capsys):
  out, _ = adult_preprocessed
  rows = [dict(r) for r in adult_test_rows]
  for i, row in enumerate(rows):
    if i % 2 == 0:
      row['occupation'] = 'Sales'  # half the rows set to one value
    row['age'] = row['age'] * 2
  log = write_request_log(str(tmp_path / 'requests.jsonl'), rows)
  code, doc = run_skew(out, log, tmp_path / 'r')
  err = capsys.readouterr().err
  assert code == 1
  assert doc['serving_data']['formats'] == ['jsonl']
  assert skewed_features(doc) == {'age', 'occupation'}
  assert flagged_features(doc) == {'age', 'occupation'}
  assert 'COMPARATOR_L_INFTY_HIGH' in types_of(doc, 'occupation')
  assert 'COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH' in types_of(doc, 'age')
  distance = {m['feature']: m['value'] for m in doc['features']}
  assert distance['occupation'] > 0.3 and distance['age'] > 0.1
  # The table on stderr names both features.
  assert 'occupation' in err and 'age' in err and 'description' in err


def test_small_serving_sample_is_judged_at_its_size(adult_preprocessed,
                                                    adult_test_rows, tmp_path):
  """300 requests: the distances are noisy enough to cross the curated
  thresholds by chance, which the test allows for; a 50-point shift in the
  same 300 rows is still flagged, on that feature alone."""
  out, _ = adult_preprocessed
  rows = [dict(r) for r in random.Random(8).sample(adult_test_rows, 300)]
  log = write_request_log(str(tmp_path / 'requests.jsonl'), rows)
  code, doc = run_skew(out, log, tmp_path / 'r')
  assert code == 0, doc['anomalies']
  over = [m for m in doc['features'] if m['value'] > m['threshold']]
  assert over, 'expected some distance over its threshold by chance'
  assert all(m['verdict'] == 'chance' for m in over)
  assert {d['feature'] for d in doc['within_chance']
         } >= {m['feature'] for m in over}
  for i, row in enumerate(rows):
    if i % 2 == 0:
      row['occupation'] = 'Sales'
  log = write_request_log(str(tmp_path / 'shifted.jsonl'), rows)
  code, doc = run_skew(out, log, tmp_path / 'r2')
  assert code == 1
  assert flagged_features(doc) == {'occupation'}
  occupation = next(m for m in doc['features'] if m['feature'] == 'occupation')
  assert occupation['verdict'] == 'anomaly'
  assert occupation['p_value'] < occupation['level']


@pytest.mark.parametrize('fraction,expect_flag', [(0.03, True), (0.005, False)])
def test_unseen_categorical_value_over_domain_threshold(adult_preprocessed,
                                                        adult_test_rows,
                                                        tmp_path, fraction,
                                                        expect_flag):
  """The curated schema tolerates 1% of values outside a domain."""
  out, _ = adult_preprocessed
  rng = random.Random(3)
  rows = [dict(r) for r in adult_test_rows]
  for row in rng.sample(rows, int(fraction * len(rows))):
    row['workclass'] = 'Robot-gov'
  log = write_request_log(str(tmp_path / 'requests.jsonl'), rows)
  code, doc = run_skew(out, log, tmp_path / 'r')
  unexpected = 'ENUM_TYPE_UNEXPECTED_STRING_VALUES' in types_of(
      doc, 'workclass')
  assert unexpected == expect_flag, doc['anomalies']
  assert code == (1 if expect_flag else 0)
  if expect_flag:
    described = [
        a['description']
        for a in doc['anomalies']
        if a['type'] == 'ENUM_TYPE_UNEXPECTED_STRING_VALUES'
    ]
    assert 'Robot-gov' in described[0]


# --------------------------------------------------------- missing at serving


def test_missing_column_flagged_label_absence_accepted(adult_preprocessed,
                                                       adult_test_rows,
                                                       tmp_path):
  out, _ = adult_preprocessed
  rows = [{
      k: v for k, v in r.items() if k != 'hours_per_week'
  } for r in adult_test_rows[:4000]]
  log = write_request_log(str(tmp_path / 'requests.jsonl'), rows)
  code, doc = run_skew(out, log, tmp_path / 'r')
  assert code == 1
  # Only the dropped feature: the label is absent too, and that is fine in
  # the SERVING environment.
  assert flagged_features(doc) == {'hours_per_week'}
  assert 'FEATURE_TYPE_NOT_PRESENT' in types_of(doc, 'hours_per_week')

  # Control: the same data against a schema that expects the label at
  # serving time flags the label as well.
  text = open(
      os.path.join(out, validation.SCHEMA_FILE), encoding='utf-8').read()
  assert text.count('not_in_environment: "SERVING"') == 1
  expecting_label = tmp_path / 'label_at_serving.pbtxt'
  expecting_label.write_text(
      text.replace('not_in_environment: "SERVING"', ''), encoding='utf-8')
  code, doc = run_skew(out, log, tmp_path / 'r2', '--schema',
                       str(expecting_label))
  assert code == 1
  assert flagged_features(doc) == {'hours_per_week', LABEL}


def test_csv_without_label_column_is_accepted(adult_preprocessed, adult_dir,
                                              tmp_path):
  """Serving CSV in the census dialect, with the label column left out."""
  out, _ = adult_preprocessed
  lines = []
  with open(os.path.join(adult_dir, 'adult.test'), encoding='utf-8') as f:
    for line in f:
      if line.strip() and not line.startswith('|'):
        lines.append(line.rstrip('\n').rsplit(',', 1)[0])
  path = tmp_path / 'serving.csv'
  path.write_text('\n'.join(lines[:6000]) + '\n', encoding='utf-8')
  code, doc = run_skew(out, path, tmp_path / 'r')
  assert code == 0, doc['anomalies']
  assert doc['serving_data']['rows_used'] == 6000
  assert doc['serving_data']['formats'] == ['csv']


def test_unparseable_rows_are_reported(adult_preprocessed, adult_test_rows,
                                       tmp_path):
  """A few rows the training parser would refuse: an anomaly, not a crash."""
  out, _ = adult_preprocessed
  rows = [dict(r) for r in adult_test_rows[:3000]]
  rows[10]['age'] = 'forty'
  log = write_request_log(str(tmp_path / 'requests.jsonl'), rows)
  with open(log, 'a', encoding='utf-8') as f:
    f.write('{"time": "2026-11-22T10:00:00Z", "features": \n')  # truncated
  code, doc = run_skew(out, log, tmp_path / 'r')
  assert code == 1
  assert doc['serving_data']['rows_used'] == 2999
  assert doc['serving_data']['rejected_by_reason'] == {
      'malformed_json': 1,
      'not_a_number': 1
  }
  assert 'age' in flagged_features(doc)


# ---------------------------------------------------------------- bad inputs


def _one_error_line(capsys):
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert err.startswith('skew: error: ')
  return err


def test_transformed_tfrecords_are_wrong_columns(adult_preprocessed, tmp_path,
                                                 capsys):
  out, _ = adult_preprocessed
  code, _ = run_skew(out, os.path.join(out, 'data', 'eval-*.tfrecord.gz'),
                     tmp_path / 'r')
  assert code == 2
  err = _one_error_line(capsys)
  assert 'wrong columns' in err and 'age_bucket' in err
  assert not os.path.exists(tmp_path / 'r' / skew.SKEW_JSON)


def test_csv_with_other_columns_is_wrong_columns(adult_preprocessed, tmp_path,
                                                 capsys):
  out, _ = adult_preprocessed
  path = tmp_path / 'other.csv'
  path.write_text('1, 2, 3\n4, 5, 6\n', encoding='utf-8')
  code, _ = run_skew(out, path, tmp_path / 'r')
  assert code == 2
  err = _one_error_line(capsys)
  assert 'wrong columns' in err
  assert ('expected 15 fields (or 14 without the label income_bracket), '
          'got 3') in err


def test_json_with_unknown_feature_is_wrong_columns(adult_preprocessed,
                                                    adult_test_rows, tmp_path,
                                                    capsys):
  out, _ = adult_preprocessed
  rows = [dict(r, salary=1) for r in adult_test_rows[:50]]
  log = write_request_log(str(tmp_path / 'requests.jsonl'), rows)
  assert run_skew(out, log, tmp_path / 'r')[0] == 2
  err = _one_error_line(capsys)
  assert 'wrong columns' in err and 'salary' in err


@pytest.mark.parametrize('name,content', [
    ('garbage.csv', bytes(range(256)) * 8),
    ('requests.jsonl.gz', b'this is not gzip data at all'),
    ('examples.tfrecord', b'\x00\x01not a tfrecord file' * 10),
    ('requests.jsonl', b'\n'.join([b'not json'] * 5)),
])
def test_unreadable_serving_data_exits_2(adult_preprocessed, tmp_path, capsys,
                                         name, content):
  out, _ = adult_preprocessed
  path = tmp_path / name
  path.write_bytes(content)
  code, _ = run_skew(out, path, tmp_path / 'r')
  assert code == 2
  err = _one_error_line(capsys)
  assert name in err or 'rows rejected' in err


def test_usage_errors_exit_2(adult_preprocessed, adult_dir, tmp_path, capsys):
  out, _ = adult_preprocessed
  adult_test = os.path.join(adult_dir, 'adult.test')
  assert run_skew(out, tmp_path / 'nothing-*.csv', tmp_path / 'r')[0] == 2
  assert 'no file matches' in _one_error_line(capsys)
  assert run_skew(str(tmp_path), adult_test, tmp_path / 'r')[0] == 2
  assert 'manifest.json not found' in _one_error_line(capsys)
  # A rejected (unpublished) directory is not a training baseline either.
  partial = tmp_path / 'partial'
  shutil.copytree(os.path.join(out, 'stats'), partial / 'stats')
  assert run_skew(str(partial), adult_test, tmp_path / 'r')[0] == 2
  _one_error_line(capsys)
  with pytest.raises(SystemExit) as e:
    skew.main(['--preprocess-dir', out])
  assert e.value.code == 2


def test_request_log_rotation_names_and_gzip(adult_preprocessed,
                                             adult_test_rows, tmp_path):
  """Rotated logs (requests.jsonl.1, .2.gz) are read as JSON lines."""
  out, _ = adult_preprocessed
  rows = adult_test_rows[:6000]
  write_request_log(str(tmp_path / 'requests.jsonl.1'), rows[:3000])
  with gzip.open(tmp_path / 'requests.jsonl.2.gz', 'wt', encoding='utf-8') as f:
    for row in rows[3000:]:
      f.write(json.dumps({'features': row}) + '\n')
  code, doc = run_skew(out, tmp_path / 'requests.jsonl.*', tmp_path / 'r')
  assert code == 0, doc['anomalies']
  assert doc['serving_data']['rows_used'] == 6000
  assert len(glob.glob(str(tmp_path / 'requests.jsonl.*'))) == 2
