"""A dataset the code has never seen, from configuration alone.

Generated data with one column of every type (int, float, bool, timestamp,
a high-cardinality string, a list, free text), missing values in each, goes
through the real preprocess job for each head (binary, multiclass,
regression); and a bare CSV goes through `schema init` to a config and
schema that preprocess accepts as they are.
"""

import datetime
import glob
import json
import os

import pytest
import tensorflow as tf
import tensorflow_transform as tft
import yaml

from pipeline import preprocess
from pipeline import schema as schema_cli
from pipeline.config import load_config
from tests import datagen
from tests.conftest import ROOT

MIXED_CONFIG = ROOT / 'tests' / 'data' / 'mixed.yaml'
ROWS = 600
BAD_ROWS = [
    '1.0,2,maybe,2024-01-01,s,a,"x",low',  # not a boolean
    '1.0,2,true,yesterday,s,a,"x",low',  # not a timestamp
    '1.0,2,true,2024-01-01,s,a,"x"',  # wrong arity
]
LABELS = {
    'binary': {'column': 'target', 'task': 'binary',
               'classes': ['low', 'high'], 'positive': 'high'},
    'multiclass': {'column': 'target', 'task': 'multiclass',
                   'classes': ['low', 'mid', 'high']},
    'regression': {'column': 'target', 'task': 'regression',
                   'log_target': True},
}


def _config_for(task, directory):
  with open(MIXED_CONFIG, encoding='utf-8') as f:
    raw = yaml.safe_load(f)
  raw['label'] = LABELS[task]
  if task == 'regression':
    raw['columns'][-1]['type'] = 'float'
    del raw['split']['stratify']
  path = os.path.join(directory, f'mixed_{task}.yaml')
  with open(path, 'w', encoding='utf-8') as f:
    yaml.safe_dump(raw, f, sort_keys=False)
  return path


def _examples(out, split):
  files = sorted(glob.glob(os.path.join(out, 'data', f'{split}-*')))
  return [tf.train.Example.FromString(r.numpy())
          for r in tf.data.TFRecordDataset(files, compression_type='GZIP')]


@pytest.fixture(scope='module', params=['binary', 'multiclass', 'regression'])
def mixed_run(request, tmp_path_factory):
  task = request.param
  d = tmp_path_factory.mktemp(f'mixed_{task}')
  rows = datagen.mixed_rows(ROWS, seed=21, task=task)
  rows[100:100] = BAD_ROWS
  data = datagen.write_lines(str(d / 'data.csv'), rows,
                             header=datagen.MIXED_HEADER)
  config = _config_for(task, str(d))
  out = str(d / 'preprocess')
  manifest = preprocess.run(['--config', config, '--input', data,
                             '--output-dir', out, '--num-shards', '2'])
  return task, load_config(config), out, manifest


def test_every_row_accounted_for(mixed_run):
  _, _, _, manifest = mixed_run
  rows = manifest['rows']
  assert rows['input'] == ROWS + len(BAD_ROWS)
  assert rows['train'] + rows['eval'] + rows['quarantined'] == rows['input']
  assert manifest['quarantined_by_reason'] == {
      'not_a_boolean': 1, 'not_a_timestamp': 1, 'wrong_arity': 1}


def test_transformed_features_of_every_type(mixed_run):
  task, config, out, _ = mixed_run
  spec = tft.TFTransformOutput(out).transformed_feature_spec()
  assert isinstance(spec['tags'], tf.io.VarLenFeature)
  assert isinstance(spec['review'], tf.io.VarLenFeature)
  for name in ('member', 'signup_hour', 'signup_day_of_week', 'signup_month',
               'shop', 'amount_bucket', 'member_x_signup_day_of_week'):
    assert spec[name].dtype == tf.int64, name
  for name in ('amount', 'visits', 'signup_hour_sin', 'signup_month_cos'):
    assert spec[name].dtype == tf.float32, name
  examples = _examples(out, 'train')
  labels = [e.features.feature['target'] for e in examples]
  if task == 'regression':
    assert spec['target'].dtype == tf.float32
    values = [l.float_list.value[0] for l in labels]
    assert min(values) > 0  # log1p of a positive amount
  else:
    assert spec['target'].dtype == tf.int64
    assert {l.int64_list.value[0] for l in labels} == set(
        range(len(config.label.classes)))
  # Bags of ids: some rows have several tags and several review tokens.
  assert max(len(e.features.feature['review'].int64_list.value)
             for e in examples) >= 4
  assert max(len(e.features.feature['tags'].int64_list.value)
             for e in examples) >= 2
  assert min(len(e.features.feature['tags'].int64_list.value)
             for e in examples) == 0


def test_serving_graph_derives_the_same_calendar_parts(mixed_run):
  _, config, out, _ = mixed_run
  layer = tft.TFTransformOutput(out).transform_features_layer()
  stamp = datetime.datetime(2024, 12, 31, 23, 59, tzinfo=datetime.timezone.utc)
  raw = {}
  for column in config.raw_columns:
    if column.name == config.label.column:
      continue
    dtype = {'int': tf.int64, 'float': tf.float32,
             'string': tf.string}[column.raw_type]
    value = {'signup': int(stamp.timestamp()), 'member': 1,
             'tags': b'sale', 'review': b'Great!', 'shop': b'shop1'}.get(
                 column.name, 1)
    raw[column.name] = tf.SparseTensor([[0, 0]], tf.constant([value], dtype),
                                       [1, 1])
  got = {k: v for k, v in layer(raw).items()}
  assert int(got['signup_hour'][0]) == 23
  assert int(got['signup_day_of_week'][0]) == 1  # a Tuesday; Monday is 0
  assert int(got['signup_month'][0]) == 11  # December
  assert int(got['member'][0]) == 1


def test_schema_init_from_a_bare_csv(tmp_path, capsys):
  data = datagen.write_lines(
      str(tmp_path / 'shop.csv'),
      datagen.mixed_rows(800, seed=4, task='multiclass',
                         iso_timestamps_only=True),
      header=datagen.MIXED_HEADER)
  out = str(tmp_path / 'schemas' / 'shop.yaml')
  assert schema_cli.main(['init', '--input', data, '--label', 'target',
                          '--output', out]) == 0
  assert 'multiclass task' in capsys.readouterr().out
  config = load_config(out)
  types = {c.name: c.type for c in config.columns}
  assert types == {'amount': 'float', 'visits': 'int', 'member': 'bool',
                   'signup': 'timestamp', 'shop': 'string', 'tags': 'string',
                   'review': 'text', 'target': 'string'}
  assert config.column('tags').is_list
  assert config.label.task == 'multiclass'
  assert sorted(config.label.classes) == ['high', 'low', 'mid']
  assert os.path.exists(str(tmp_path / 'schemas' / 'shop_schema.pbtxt'))
  pp = str(tmp_path / 'pp')
  # Drafted drift thresholds are sized for thousands of rows; on a 160-row
  # eval split sampling noise may cross them, so report rather than fail,
  # and check that nothing else (types, presence, domains) is anomalous.
  manifest = preprocess.run(['--config', out, '--input', data,
                             '--output-dir', pp, '--anomalies', 'warn'])
  assert manifest['rows']['quarantined'] == 0
  assert manifest['rows']['train'] + manifest['rows']['eval'] == 800
  with open(os.path.join(pp, 'anomalies.json'), encoding='utf-8') as f:
    found = json.load(f)['anomalies']
  assert all(a['type'].startswith('COMPARATOR_') for a in found), found
  # A second init does not overwrite a curated config by accident.
  assert schema_cli.main(['init', '--input', data, '--label', 'target',
                          '--output', out]) == 2
  assert 'already exists' in capsys.readouterr().err
