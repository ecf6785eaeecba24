"""python -m pipeline.schema: infer (draft) and show."""

import os

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from pipeline import schema as schema_cli
from tests import datagen
from tests.conftest import ROOT, TOY_CONFIG

CURATED = str(ROOT / 'schemas' / 'census_schema.pbtxt')


@pytest.fixture(scope='module')
def toy_csv(tmp_path_factory):
  d = tmp_path_factory.mktemp('schema')
  rows = datagen.toy_rows(400, seed=5)
  rows.append('1.0, 2, oslo, purple, bad color, no')  # quarantined
  return datagen.write_lines(str(d / 'toy.csv'), rows,
                             header=datagen.TOY_HEADER)


def test_infer_drafts_a_schema_with_environments_and_comparators(
    toy_csv, tmp_path, capsys):
  out = str(tmp_path / 'nested' / 'toy_schema.pbtxt')
  assert schema_cli.main(['infer', '--config', TOY_CONFIG, '--input', toy_csv,
                          '--output', out]) == 0
  printed = capsys.readouterr().out
  assert 'from 400 rows of 1 file(s) (1 quarantined)' in printed
  schema = tfdv.load_schema_text(out)
  features = {f.name: f for f in schema.feature}
  # The raw columns the pipeline carries (the unused 'note' is not one).
  assert list(features) == ['height', 'visits', 'city', 'color', 'outcome']
  assert list(schema.default_environment) == ['TRAINING', 'SERVING']
  assert list(features['outcome'].not_in_environment) == ['SERVING']
  assert not features['outcome'].HasField('skew_comparator')
  assert features['city'].skew_comparator.infinity_norm.threshold == 0.05
  assert features['city'].drift_comparator.infinity_norm.threshold == 0.03
  height = features['height'].skew_comparator.jensen_shannon_divergence
  assert height.threshold == 0.05
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


def test_infer_refuses_to_overwrite_and_reports_bad_input(toy_csv, tmp_path,
                                                          capsys):
  out = tmp_path / 'curated.pbtxt'
  out.write_text('# curated by hand\n', encoding='utf-8')
  args = ['infer', '--config', TOY_CONFIG, '--input', toy_csv, '--output',
          str(out)]
  assert schema_cli.main(args) == 2
  assert 'already exists' in capsys.readouterr().err
  assert out.read_text(encoding='utf-8') == '# curated by hand\n'
  assert schema_cli.main(['infer', '--config', TOY_CONFIG, '--input',
                          str(tmp_path / 'none*.csv'), '--output',
                          str(tmp_path / 's.pbtxt')]) == 2
  assert 'no file matches' in capsys.readouterr().err


def test_show_prints_one_row_per_feature(capsys):
  assert schema_cli.main(['show', CURATED]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split() == ['feature', 'type', 'presence', 'environments',
                              'skew', 'drift', 'domain']
  rows = {l.split()[0]: l for l in lines[2:] if l.strip() and
          not l.startswith('15 features')}
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
