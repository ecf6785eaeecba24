"""python -m pipeline.schema: infer (draft), show, and drafting a config."""

import os
import random
import re

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from pipeline import config_draft
from pipeline import schema as schema_cli
from tests import datagen
from tests.conftest import ROOT
from tests.conftest import TOY_CONFIG

CURATED = str(ROOT / 'schemas' / 'census_schema.pbtxt')


@pytest.fixture(scope='module')
def toy_csv(tmp_path_factory):
  d = tmp_path_factory.mktemp('schema')
  rows = datagen.toy_rows(400, seed=5)
  rows.append('1.0, 2, oslo, purple, bad color, no')  # quarantined
  return datagen.write_lines(
      str(d / 'toy.csv'), rows, header=datagen.TOY_HEADER)


def test_infer_drafts_a_schema_with_environments_and_comparators(
    toy_csv, tmp_path, capsys):
  out = str(tmp_path / 'nested' / 'toy_schema.pbtxt')
  assert schema_cli.main(
      ['infer', '--config', TOY_CONFIG, '--input', toy_csv, '--output',
       out]) == 0
  printed = capsys.readouterr().out
  assert 'from 400 rows of 1 file(s) (1 quarantined)' in printed
  schema = tfdv.load_schema_text(out)
  features = {f.name: f for f in schema.feature}
  # The raw columns the pipeline carries (the unused 'note' is not one).
  assert list(features) == ['height', 'visits', 'city', 'color', 'outcome']
  assert list(schema.default_environment) == ['TRAINING', 'SERVING']
  assert list(features['outcome'].not_in_environment) == ['SERVING']
  assert not features['outcome'].HasField('skew_comparator')
  # The drafted thresholds: the smallest change worth flagging (drift.py
  # decides whether a change that large is more than chance).
  assert features['city'].skew_comparator.infinity_norm.threshold == 0.03
  assert features['city'].drift_comparator.infinity_norm.threshold == 0.03
  height = features['height'].skew_comparator.jensen_shannon_divergence
  assert height.threshold == 0.02
  assert height.source.type == schema_pb2.HistogramSelection.QUANTILES
  assert features['height'].type == schema_pb2.FLOAT
  assert features['visits'].type == schema_pb2.INT
  domains = {d.name: sorted(d.value) for d in schema.string_domain}
  assert domains[features['city'].domain] == sorted(datagen.TOY_CITIES)
  assert domains[features['color'].domain] == ['blue', 'green', 'red']
  # Columns with missing values are optional, the label is required; no
  # fixed shape, so a missing value is a presence question only.
  assert features['city'].presence.min_fraction == 0
  assert features['outcome'].presence.min_fraction == 1
  assert not any(f.HasField('shape') for f in schema.feature)
  # The table is printed too.
  assert 'city' in printed and 'TRAINING, SERVING' in printed


def test_infer_refuses_to_overwrite_and_reports_bad_input(
    toy_csv, tmp_path, capsys):
  out = tmp_path / 'curated.pbtxt'
  out.write_text('# curated by hand\n', encoding='utf-8')
  args = [
      'infer', '--config', TOY_CONFIG, '--input', toy_csv, '--output',
      str(out)
  ]
  assert schema_cli.main(args) == 2
  assert 'already exists' in capsys.readouterr().err
  assert out.read_text(encoding='utf-8') == '# curated by hand\n'
  assert schema_cli.main([
      'infer', '--config', TOY_CONFIG, '--input',
      str(tmp_path / 'none*.csv'), '--output',
      str(tmp_path / 's.pbtxt')
  ]) == 2
  assert 'no file matches' in capsys.readouterr().err


def test_show_prints_one_row_per_feature(capsys):
  assert schema_cli.main(['show', CURATED]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split() == [
      'feature', 'type', 'presence', 'environments', 'skew', 'drift', 'domain'
  ]
  rows = {
      l.split()[0]: l
      for l in lines[2:]
      if l.strip() and not l.startswith('15 features')
  }
  assert len(rows) == 15
  assert 'TRAINING, SERVING' in rows['age'] and '[17, 90]' in rows['age']
  assert 'JSD 0.05 (quantiles)' in rows['age']
  assert 'SERVING' not in rows['income_bracket']
  assert '41 values' in rows['native_country']
  assert 'L-inf 0.05' in rows['occupation']
  assert lines[-1] == ('15 features; default environments: TRAINING, '
                       'SERVING')


def test_show_errors(tmp_path, capsys):
  assert schema_cli.main(['show', str(tmp_path / 'missing.pbtxt')]) == 2
  assert 'file not found' in capsys.readouterr().err
  bad = tmp_path / 'bad.pbtxt'
  bad.write_text('feature {', encoding='utf-8')
  assert schema_cli.main(['show', str(bad)]) == 2
  assert 'not a valid TFDV schema' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    schema_cli.main(['guess'])
  assert os.path.exists(CURATED)


# ------------------------------------------------- init: drafting a config


@pytest.fixture(scope='module')
def trips_draft(tmp_path_factory):
  path = datagen.write_lines(
      str(tmp_path_factory.mktemp('trips') / 'trips.csv'),
      datagen.trip_rows(3000, seed=3),
      header=datagen.TRIP_HEADER)
  return config_draft.draft_config(path, 'tipped', name='trips')


def test_init_leaves_out_what_a_model_must_not_see(trips_draft):
  config = trips_draft.config
  # Every column still parses; only these are features.
  assert config.column_names == datagen.TRIP_HEADER.split(',')
  assert [c.name for c in config.feature_columns
         ] == ['pickup_area', 'distance', 'passengers', 'payment']
  found = {f.column: f.check for f in trips_draft.findings}
  assert found == {
      'trip_id': 'identifier',
      'pickup_area': 'integer_code',
      'notes': 'empty',
      'vendor': 'constant',
      'tip': 'leakage'
  }
  [leak] = trips_draft.warnings
  assert re.fullmatch(
      r'`tip` alone predicts the label with AUC 0\.99\d: likely leakage; add '
      r'it back under `features:` if it is really known at serving time',
      leak.detail), leak.detail
  # Each is named with its reason in a comment of the draft.
  comments = ' '.join(
      l.strip('# ')
      for l in trips_draft.text.splitlines()
      if l.lstrip().startswith('#'))
  for text in ('notes has no value in the 3,000 sampled rows',
               "vendor has the one value 'acme' in every row",
               'trip_id is unique per row (3,000 values in 3,000 rows; "id" '
               'in the name)', '`tip` alone predicts the label with AUC',
               'pickup_area looks like an integer code, not a quantity (20 '
               'distinct values'):
    assert text in ' '.join(comments.split()), text


def test_init_keeps_genuine_columns_and_makes_codes_categorical(trips_draft):
  config = trips_draft.config
  types = {c.name: c.type for c in config.columns}
  assert types == {
      'trip_id': 'int',
      'pickup_area': 'string',
      'distance': 'float',
      'passengers': 'int',
      'payment': 'string',
      'notes': 'string',
      'vendor': 'string',
      'tip': 'float',
      'tipped': 'string'
  }
  numeric = {f.name: f for f in config.numeric}
  categorical = {f.name: f for f in config.categorical}
  assert set(numeric) == {'distance', 'passengers'}
  assert set(categorical) == {'pickup_area', 'payment'}
  # The code gets one id per value (a vocabulary), not a scale.
  assert categorical['pickup_area'].vocabulary
  assert numeric['distance'].log1p and numeric['distance'].buckets == 10
  # Few consecutive small integers stay a plain number.
  assert (numeric['passengers'].scale, numeric['passengers'].log1p,
          numeric['passengers'].buckets) == ('zscore', False, 0)
  assert config.label.positive == 'yes'


def test_init_summary_table(trips_draft):
  lines = schema_cli.summary_table(trips_draft).splitlines()
  assert lines[0].split() == [
      'column', 'type', 'treatment', 'missing', 'distinct', 'why'
  ]
  rows = {l.split()[0]: l for l in lines[2:]}
  assert list(rows) == datagen.TRIP_HEADER.split(',')
  assert re.search(
      r'trip_id +int +left out +0\.0% +3,000 +identifier: 100% '
      'unique$', rows['trip_id'])
  assert re.search(r'notes +string +left out +100\.0% +0 +empty$',
                   rows['notes'])
  assert rows['vendor'].endswith("constant: 'acme'")
  assert re.search(r'tip +float +left out .* leakage: AUC 0\.99\d alone$',
                   rows['tip'])
  assert re.search(
      r'pickup_area +string +vocabulary +\d\.\d% +20 +integer '
      'code: 20 values$', rows['pickup_area'])
  assert re.search(
      r'distance +float +zscore, log1p, 10 buckets .* skewed '
      r'\(skewness \d+\.\d\): log1p; [\d,]+ values: quantile '
      'buckets$', rows['distance'])
  assert re.search(r'passengers +int +zscore +0\.0% +6$', rows['passengers'])
  assert re.search(
      r'tipped +string +label \(binary\) .* positive class '
      "'yes'$", rows['tipped'])


def _target_table(path, task, n=1500, seed=9):
  """A CSV whose `total` is computed from the label, `rooms` a genuine
  number, `level` a constant number where present, `flag` one value or
  missing."""
  rng = random.Random(seed)
  lines = ['rooms,total,level,flag,city,y']
  for _ in range(n):
    rooms = rng.randint(1, 8)
    city = rng.choice(['oslo', 'lima', 'rome'])
    value = 50 * rooms + 40 * (city == 'oslo') + rng.gauss(0, 60)
    if task == 'regression':
      y = f'{value:.2f}'
      total = f'{1.08 * value + rng.gauss(0, 2):.2f}'
    else:
      y = 'low' if value < 150 else ('mid' if value < 250 else 'high')
      total = f'{value + rng.gauss(0, 3):.2f}'
    flag = '1' if rng.random() < 0.4 else ''
    lines.append(f'{rooms},{total},7,{flag},{city},{y}')
  return datagen.write_lines(path, lines)


@pytest.mark.parametrize('task,metric', [('regression', 'R²'),
                                         ('multiclass', 'AUC')])
def test_init_finds_leaks_for_every_task(tmp_path, task, metric):
  draft = config_draft.draft_config(
      _target_table(str(tmp_path / 't.csv'), task), 'y', name='t')
  assert draft.config.label.task == task
  [leak] = draft.warnings
  assert leak.column == 'total'
  assert re.match(
      f'`total` alone predicts the label with {metric} '
      r'(0\.9[5-9]\d|1\.000): likely leakage', leak.detail)
  assert {
      f.column: f.check for f in draft.findings
  } == {
      'total': 'leakage',
      'level': 'constant'
  }
  features = {c.name for c in draft.config.feature_columns}
  assert features == {'rooms', 'flag', 'city'}
  # One value, else missing: only whether it is there can tell, so an id
  # per value (the missing one included), not a number imputed to itself.
  assert draft.config.column('flag').type == 'string'
  assert 'flag' in {f.name for f in draft.config.categorical}
