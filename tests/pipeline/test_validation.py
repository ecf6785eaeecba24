"""The validation stage of preprocess: the curated schema, drift, and what a
failed validation leaves behind."""

import json
import os

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from core.config import load_config
from core.errors import UserError
from pipeline import preprocess
from pipeline import schema as schema_cli
from pipeline import validation
from tests import datagen
from tests.conftest import CENSUS_CONFIG
from tests.conftest import ROOT
from tests.conftest import TOY_CONFIG

CURATED = str(ROOT / 'schemas' / 'census_schema.pbtxt')


def _read_json(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


# ------------------------------------------------------------- real Adult run


def test_adult_run_is_valid_against_the_curated_schema(adult_preprocessed):
  out, _ = adult_preprocessed
  doc = _read_json(os.path.join(out, validation.ANOMALIES_FILE))
  assert doc['status'] == 'ok' and doc['anomalies'] == []
  assert doc['curated_schema'] is True
  assert doc['schema'].endswith('census_schema.pbtxt')
  # eval and test each compared with train on every column, label included,
  # and every distance is under its curated threshold.
  assert set(doc['drift']) == {'eval', 'test'}
  for split, items in doc['drift'].items():
    assert len(items) == 15, split
    for m in items:
      assert m['value'] <= m['threshold'] and not m['flagged'], (split, m)
  # The output carries the schema it was validated against (skew needs only
  # the output directory) and TFDV's own anomalies per split.
  assert tfdv.load_schema_text(os.path.join(
      out, validation.SCHEMA_FILE)) == tfdv.load_schema_text(CURATED)
  for split in ('train', 'eval', 'test'):
    anomalies = tfdv.load_anomalies_text(
        os.path.join(out, validation.ANOMALIES_DIR, f'{split}.pbtxt'))
    assert not anomalies.anomaly_info
  assert os.path.getsize(os.path.join(out, 'stats', 'report.html')) > 10000


def test_adult_drift_is_flagged_with_tight_thresholds(adult_preprocessed):
  """The same statistics fail once thresholds are below the measured noise,
  so the clean result above is a measurement, not a check that never fires."""
  out, _ = adult_preprocessed
  schema = validation.load_schema(CURATED)
  for feature in schema.feature:
    for comparator in (feature.drift_comparator,):
      if comparator.HasField('infinity_norm'):
        comparator.infinity_norm.threshold = 0.004
      else:
        comparator.jensen_shannon_divergence.threshold = 0.004
  stats = {
      n: validation.load_statistics(os.path.join(out, 'stats', f'{n}.pb'))
      for n in ('train', 'eval')
  }
  results = validation.validate_splits(schema, stats)
  assert not results['train'].anomaly_info
  flagged = {r.feature for r in validation.anomaly_rows(results['eval'])}
  assert {'occupation', 'marital_status', 'fnlwgt'} <= flagged
  assert {r.type for r in validation.anomaly_rows(results['eval'])} <= {
      'COMPARATOR_L_INFTY_HIGH', 'COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH'
  }


def test_curated_schema_is_complete():
  config = load_config(CENSUS_CONFIG)
  schema = validation.resolve_schema(config, CENSUS_CONFIG)
  assert list(schema.default_environment) == ['TRAINING', 'SERVING']
  domains = {d.name: list(d.value) for d in schema.string_domain}
  for f in schema.feature:
    if f.name == config.label.column:
      assert list(f.not_in_environment) == ['SERVING']
      assert not f.HasField('skew_comparator')
      assert f.drift_comparator.infinity_norm.threshold > 0
      assert domains[f.domain] == ['<=50K', '>50K']
      continue
    assert not f.not_in_environment
    assert f.presence.min_fraction >= 0.9
    if f.type == schema_pb2.BYTES:
      assert f.skew_comparator.infinity_norm.threshold > 0
      assert f.drift_comparator.infinity_norm.threshold > 0
      assert len(domains[f.domain]) >= 2
      assert f.distribution_constraints.min_domain_mass == 0.99
    else:
      assert f.type == schema_pb2.INT
      assert f.int_domain.HasField('min')
      for c in (f.skew_comparator, f.drift_comparator):
        assert c.jensen_shannon_divergence.threshold > 0
        assert (c.jensen_shannon_divergence.source.type ==
                schema_pb2.HistogramSelection.QUANTILES)
  assert len(domains['native_country']) == 41


# ------------------------------------------------------- a failing validation


@pytest.fixture(scope='module')
def toy_curated(tmp_path_factory):
  """Toy data, a schema drafted from it with `schema infer`, and a config
  that points to the schema by a path relative to the YAML."""
  d = tmp_path_factory.mktemp('toy_validation')
  clean = datagen.write_lines(
      str(d / 'toy.csv'),
      datagen.toy_rows(2000, seed=1),
      header=datagen.TOY_HEADER)
  schema_path = str(d / 'toy_schema.pbtxt')
  assert schema_cli.main([
      'infer', '--config', TOY_CONFIG, '--input', clean, '--output', schema_path
  ]) == 0
  # Curate for samples this small: a few hundred rows per split vary by a
  # few percent by chance.
  schema = validation.load_schema(schema_path)
  for f in schema.feature:
    for c in (f.skew_comparator, f.drift_comparator):
      if c.HasField('infinity_norm'):
        c.infinity_norm.threshold = 0.12
      elif c.HasField('jensen_shannon_divergence'):
        c.jensen_shannon_divergence.threshold = 0.12
  validation.write_schema(schema, schema_path)
  with open(TOY_CONFIG, encoding='utf-8') as f:
    text = f.read()
  config = d / 'toy.yaml'
  config.write_text(
      text + '\ntfdv_schema: toy_schema.pbtxt\n', encoding='utf-8')
  # A held-out split from somewhere else: 40% of the cities unseen, heights
  # shifted by 60 cm.
  rows = []
  for i, line in enumerate(datagen.toy_rows(500, seed=2)):
    fields = line.split(', ')
    if i % 5 < 2:
      fields[2] = 'atlantis'
    try:
      fields[0] = str(float(fields[0]) + 60)
    except ValueError:
      pass  # a missing value stays missing
    rows.append(', '.join(fields))
  shifted = datagen.write_lines(
      str(d / 'shifted.csv'), rows, header=datagen.TOY_HEADER)
  return {
      'dir': d,
      'config': str(config),
      'clean': clean,
      'shifted': shifted,
      'schema': schema_path
  }


def test_anomalous_split_fails_the_run_and_is_not_published(
    toy_curated, capsys):
  d = toy_curated['dir']
  out = d / 'out'
  out.mkdir()
  (out / 'previous-good-run').write_text('kept', encoding='utf-8')
  code = preprocess.main([
      '--config', toy_curated['config'], '--input', toy_curated['clean'],
      '--test-input', toy_curated['shifted'], '--output-dir',
      str(out), '--overwrite', '--num-shards', '1'
  ])
  err = capsys.readouterr().err
  assert code == 1
  # The readable table, on stderr.
  assert 'split  feature  anomaly' in err
  lines = [l.split() for l in err.splitlines()]
  assert ['test', 'city'] in [l[:2] for l in lines]
  assert ['test', 'height'] in [l[:2] for l in lines]
  assert 'NOT published' in err and '--anomalies warn' in err
  # Nothing published, the previous output left alone, no staging left over.
  assert sorted(os.listdir(out)) == ['previous-good-run']
  assert not os.path.exists(f'{out}.tmp')
  # What explains the failure is kept beside it.
  rejected = f'{out}{validation.REJECTED_SUFFIX}'
  doc = _read_json(os.path.join(rejected, validation.ANOMALIES_FILE))
  assert doc['status'] == 'failed'
  by_split = {}
  for a in doc['anomalies']:
    by_split.setdefault(a['dataset'], set()).add(a['feature'])
  assert by_split == {'test': {'city', 'height'}}
  types = {a['type'] for a in doc['anomalies']}
  assert 'ENUM_TYPE_UNEXPECTED_STRING_VALUES' in types
  assert 'COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH' in types
  assert tfdv.load_anomalies_text(
      os.path.join(rejected, 'anomalies', 'test.pbtxt')).anomaly_info['city']
  for name in ('stats/train.pb', 'stats/test.pb', 'stats/report.html',
               'schema.pbtxt', 'config.yaml'):
    assert os.path.exists(os.path.join(rejected, name)), name
  assert 'atlantis' in open(
      os.path.join(rejected, 'stats', 'report.html'), encoding='utf-8').read()


def test_anomalies_warn_publishes_with_the_report(toy_curated, capsys):
  out = str(toy_curated['dir'] / 'out_warn')
  code = preprocess.main([
      '--config', toy_curated['config'], '--input', toy_curated['clean'],
      '--test-input', toy_curated['shifted'], '--output-dir', out,
      '--num-shards', '1', '--anomalies', 'warn'
  ])
  captured = capsys.readouterr()
  assert code == 0
  assert 'warning' in captured.err and 'test   city' in captured.err
  assert os.path.exists(os.path.join(out, 'manifest.json'))
  doc = _read_json(os.path.join(out, validation.ANOMALIES_FILE))
  assert doc['status'] == 'warn' and doc['on_anomalies'] == 'warn'
  assert {a['feature'] for a in doc['anomalies']} == {'city', 'height'}


def test_schema_problems_stop_the_run_before_it_starts(toy_curated, tmp_path,
                                                       capsys):
  d = toy_curated['dir']
  config = tmp_path / 'toy.yaml'
  text = open(TOY_CONFIG, encoding='utf-8').read()
  config.write_text(text + '\ntfdv_schema: nowhere.pbtxt\n', encoding='utf-8')
  base = ['--input', toy_curated['clean'], '--output-dir', str(tmp_path / 'o')]
  assert preprocess.main(['--config', str(config)] + base) == 2
  err = capsys.readouterr().err
  assert 'nowhere.pbtxt: file not found' in err
  assert preprocess.main(['--config', TOY_CONFIG, '--schema', CURATED] +
                         base) == 2
  err = capsys.readouterr().err
  assert 'does not match the config' in err and 'missing height' in err
  bad = tmp_path / 'bad.pbtxt'
  bad.write_text('feature { name: "x" typo: 1 }', encoding='utf-8')
  assert preprocess.main(['--config', TOY_CONFIG, '--schema',
                          str(bad)] + base) == 2
  assert 'not a valid TFDV schema' in capsys.readouterr().err
  assert not os.path.exists(tmp_path / 'o') and not os.path.exists(
      tmp_path / 'o.tmp')
  assert os.path.exists(d / 'toy_schema.pbtxt')


def test_without_curated_schema_a_draft_is_used_and_never_fails(
    trainer_toy_preprocessed):
  out, _ = trainer_toy_preprocessed
  doc = _read_json(os.path.join(out, validation.ANOMALIES_FILE))
  assert doc['curated_schema'] is False and doc['on_anomalies'] == 'warn'
  assert doc['status'] in ('ok', 'warn')
  drafted = tfdv.load_schema_text(os.path.join(out, validation.SCHEMA_FILE))
  label = [f for f in drafted.feature if f.name == 'outcome'][0]
  assert list(label.not_in_environment) == ['SERVING']


def test_anomaly_table_format():
  rows = [
      validation.AnomalyRow('age', 'Out-of-range values', 'X',
                            'Unexpectedly small value: 1.', 'eval'),
      validation.AnomalyRow('native_country', 'Column dropped', 'Y',
                            'The feature was not present.', 'test')
  ]
  table = validation.anomaly_table(rows, with_dataset=True).splitlines()
  assert table[0].split() == ['split', 'feature', 'anomaly', 'description']
  assert table[2].startswith('eval   age             Out-of-range values  ')
  assert table[3].endswith('The feature was not present.')
  # Columns line up.
  assert (table[0].index('anomaly') == table[2].index('Out-of-range') ==
          table[3].index('Column dropped'))


# ------------------------------------------------------- missing values


def _adult_statistics(adult_dir, missing_ages):
  """TFDV statistics of the first 5,000 rows of adult.data, as preprocess
  computes them, with `missing_ages` of them missing their age ('?')."""
  from tensorflow_data_validation.statistics import stats_impl  # pylint: disable=g-import-not-at-top

  from pipeline import cleanse  # pylint: disable=g-import-not-at-top
  from pipeline.sources import RawChunk  # pylint: disable=g-import-not-at-top
  config = load_config(CENSUS_CONFIG)
  with open(os.path.join(adult_dir, 'adult.data'), 'rb') as f:
    lines = [l for l in f.read().split(b'\n')[:5000] if l.strip()]
  for i in range(missing_ages):
    lines[i] = b' ?,' + lines[i].split(b',', 1)[1]
  batch, quarantine, _ = cleanse.RowParser(config).parse_chunk(
      RawChunk('adult.data', 1, 'csv', lines))
  assert quarantine == []
  return stats_impl.generate_statistics_in_memory(batch, tfdv.StatsOptions())


def test_one_missing_value_fails_nothing_a_fifth_missing_is_caught(adult_dir):
  """census.yaml lets age miss in up to 1% of rows and the curated schema
  says the same (presence.min_fraction 0.99), so TFDV passes a split with
  one missing age and flags one where a fifth of the ages are missing."""
  config = load_config(CENSUS_CONFIG)
  schema = validation.resolve_schema(config, CENSUS_CONFIG)
  for missing, anomalies in ((0, []), (1, []), (49, []), (1000, [
      ('age', 'FEATURE_TYPE_LOW_FRACTION_PRESENT')
  ])):
    result = tfdv.validate_statistics(
        _adult_statistics(adult_dir, missing),
        schema,
        environment=validation.TRAINING)
    assert [(r.feature, r.type) for r in validation.anomaly_rows(result)] \
        == anomalies, missing


def test_config_and_schema_must_agree_on_missing_values(tmp_path):
  config = load_config(CENSUS_CONFIG)
  schema = validation.load_schema(CURATED)
  for f in schema.feature:
    if f.name == 'age':
      f.presence.min_fraction = 1.0
  path = str(tmp_path / 'schema.pbtxt')
  validation.write_schema(schema, path)
  with pytest.raises(UserError) as e:
    validation.resolve_schema(config, CENSUS_CONFIG, override=path)
  msg = str(e.value)
  assert "'age'" in msg and 'min_fraction 1' in msg and '0.01' in msg
  assert 'max_missing' in msg
  # A drafted schema takes the shares from the config.
  stats = tfdv.generate_statistics_from_dataframe(
      pd.DataFrame({
          'age': [30, 40],
          'workclass': ['a', 'b']
      }))
  drafted = validation.draft_schema(stats, config)
  presence = {f.name: f.presence.min_fraction for f in drafted.feature}
  assert presence['age'] == pytest.approx(0.99)
  assert presence['workclass'] == pytest.approx(0.9)
