"""A dataset the code has never seen, from configuration alone.

Generated data with one column of every type (int, float, bool, timestamp,
a high-cardinality string, a list, free text), missing values in each, goes
through the real preprocess job for each head (binary, multiclass,
regression), then trainer.task, the export, trainer.predict and the REST
server, whose outputs must fit the head and agree with each other; and a
bare CSV goes through `schema init` to a config and schema that preprocess
accepts as they are.
"""

import csv
import datetime
import glob
import json
import os
import re

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import yaml

from core.config import load_config
from core.layout import ExportDir
from core.layout import resolve_export
from pipeline import feature_warnings
from pipeline import preprocess
from pipeline import schema as schema_cli
from tests import datagen
from tests import grpc_client
from tests.serving_client import Server
from trainer import heads as trainer_heads
from trainer import predict
from trainer import task as trainer_task

pytestmark = pytest.mark.long

ROWS = 600
BAD_ROWS = [
    '1.0,2,maybe,2024-01-01,s,a,"x",low',  # not a boolean
    '1.0,2,true,yesterday,s,a,"x",low',  # not a timestamp
    '1.0,2,true,2024-01-01,s,a,"x"',  # wrong arity
]


def _config_for(task, directory):
  raw = datagen.mixed_config(task)
  path = os.path.join(directory, f'mixed_{task}.yaml')
  with open(path, 'w', encoding='utf-8') as f:
    yaml.safe_dump(raw, f, sort_keys=False)
  return path


def _examples(out, split):
  files = sorted(glob.glob(os.path.join(out, 'data', f'{split}-*')))
  return [
      tf.train.Example.FromString(r.numpy())
      for r in tf.data.TFRecordDataset(files, compression_type='GZIP')
  ]


@pytest.fixture(scope='module', params=['binary', 'multiclass', 'regression'])
def mixed_run(request, tmp_path_factory):
  task = request.param
  d = tmp_path_factory.mktemp(f'mixed_{task}')
  rows = datagen.mixed_rows(ROWS, seed=21, task=task)
  rows[100:100] = BAD_ROWS
  data = datagen.write_lines(
      str(d / 'data.csv'), rows, header=datagen.MIXED_HEADER)
  config = _config_for(task, str(d))
  out = str(d / 'preprocess')
  manifest = preprocess.run([
      '--config', config, '--input', data, '--output-dir', out, '--num-shards',
      '2'
  ])
  return task, load_config(config), out, manifest


def test_every_row_accounted_for(mixed_run):
  _, _, _, manifest = mixed_run
  rows = manifest['rows']
  assert rows['input'] == ROWS + len(BAD_ROWS)
  assert rows['train'] + rows['eval'] + rows['quarantined'] == rows['input']
  assert manifest['quarantined_by_reason'] == {
      'not_a_boolean': 1,
      'not_a_timestamp': 1,
      'wrong_arity': 1
  }


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
    assert {l.int64_list.value[0] for l in labels
           } == set(range(len(config.label.classes)))
  # Bags of ids: some rows have several tags and several review tokens.
  assert max(
      len(e.features.feature['review'].int64_list.value) for e in examples) >= 4
  assert max(
      len(e.features.feature['tags'].int64_list.value) for e in examples) >= 2
  assert min(
      len(e.features.feature['tags'].int64_list.value) for e in examples) == 0


def test_serving_graph_derives_the_same_calendar_parts(mixed_run):
  _, config, out, _ = mixed_run
  layer = tft.TFTransformOutput(out).transform_features_layer()
  stamp = datetime.datetime(2024, 12, 31, 23, 59, tzinfo=datetime.timezone.utc)
  raw = {}
  for column in config.raw_columns:
    if column.name == config.label.column:
      continue
    dtype = {
        'int': tf.int64,
        'float': tf.float32,
        'string': tf.string
    }[column.raw_type]
    value = {
        'signup': int(stamp.timestamp()),
        'member': 1,
        'tags': b'sale',
        'review': b'Great!',
        'shop': b'shop1'
    }.get(column.name, 1)
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
      datagen.mixed_rows(
          800, seed=4, task='multiclass', iso_timestamps_only=True),
      header=datagen.MIXED_HEADER)
  out = str(tmp_path / 'schemas' / 'shop.yaml')
  assert schema_cli.main(
      ['init', '--input', data, '--label', 'target', '--output', out]) == 0
  assert 'multiclass task' in capsys.readouterr().out
  config = load_config(out)
  types = {c.name: c.type for c in config.columns}
  assert types == {
      'amount': 'float',
      'visits': 'int',
      'member': 'bool',
      'signup': 'timestamp',
      'shop': 'string',
      'tags': 'string',
      'review': 'text',
      'target': 'string'
  }
  assert config.column('tags').is_list
  assert config.label.task == 'multiclass'
  assert sorted(config.label.classes) == ['high', 'low', 'mid']
  assert os.path.exists(str(tmp_path / 'schemas' / 'shop_schema.pbtxt'))
  pp = str(tmp_path / 'pp')
  # Drafted drift thresholds are sized for thousands of rows; on a 160-row
  # eval split sampling noise may cross them, so report rather than fail,
  # and check that nothing else (types, presence, domains) is anomalous.
  manifest = preprocess.run([
      '--config', out, '--input', data, '--output-dir', pp, '--anomalies',
      'warn'
  ])
  assert manifest['rows']['quarantined'] == 0
  assert manifest['rows']['train'] + manifest['rows']['eval'] == 800
  with open(os.path.join(pp, 'anomalies.json'), encoding='utf-8') as f:
    found = json.load(f)['anomalies']
  assert all(a['type'].startswith('COMPARATOR_') for a in found), found
  # A second init does not overwrite a curated config by accident.
  assert schema_cli.main(
      ['init', '--input', data, '--label', 'target', '--output', out]) == 2
  assert 'already exists' in capsys.readouterr().err


# ------------------------------------------- trained, exported and served


@pytest.fixture(scope='module')
def mixed_model(mixed_run):
  """The head's model trained on the preprocessed mixed data: (task,
  config, data CSV, model dir, metrics document, preprocess manifest)."""
  task_name, config, out, manifest = mixed_run
  model_dir = os.path.join(os.path.dirname(out), 'model')
  doc = trainer_task.run([
      '--preprocess-dir', out, '--model-dir', model_dir, '--epochs', '25',
      '--batch-size', '32', '--early-stopping-patience', '5', '--verbose', '0',
      '--seed', '2'
  ])
  return (task_name, config, os.path.join(os.path.dirname(out),
                                          'data.csv'), model_dir, doc, manifest)


def _instances(config, data, n):
  """The first n good data rows of the CSV as REST instances: typed JSON
  values, null for a missing one, the label left out."""
  missing = set(config.missing_values)
  with open(data, encoding='utf-8', newline='') as f:
    rows = list(csv.reader(f))[1:]
  out = []
  for fields in rows:
    if len(fields) != len(config.column_names):
      continue
    instance = {}
    for column, value in zip(config.columns, fields):
      if column.name == config.label.column:
        continue
      if value.strip() in missing:
        instance[column.name] = None
      elif column.type == 'int':
        instance[column.name] = int(value)
      elif column.type == 'float':
        instance[column.name] = float(value)
      else:
        instance[column.name] = value
    if 'maybe' in fields or 'yesterday' in fields:
      continue  # the bad rows
    out.append(instance)
    if len(out) == n:
      break
  return out


def test_each_head_trains_to_useful_metrics(mixed_model):
  task_name, config, _, model_dir, doc, manifest = mixed_model
  assert doc['task'] == task_name
  with open(os.path.join(model_dir, 'metrics.json'), encoding='utf-8') as f:
    written = json.load(f)
  assert written['eval'] == json.loads(json.dumps(doc['eval']))
  m = doc['eval']
  assert m['rows'] == manifest['rows']['eval']
  if task_name == 'binary':
    assert m['roc_auc'] > 0.8, m
    assert 0.0 < doc['threshold'] < 1.0
  elif task_name == 'multiclass':
    # Better than always answering the most common class, by a margin.
    assert m['accuracy'] > m['majority_rate'] + 0.1, m
    assert m['macro_roc_auc'] > 0.8, m
    cm = np.array(m['confusion_matrix'])
    assert cm.shape == (3, 3) and cm.sum() == m['rows']
    assert set(m['per_class']) == {'low', 'mid', 'high'}
    assert doc['training']['monitor'] == 'val_cross_entropy'
  else:
    assert m['r2'] > 0.3, m
    assert m['rmse'] > 0 and 'rmse_log' in m
    assert doc['training']['train_label']['std'] > 0
    assert doc['training']['monitor'] == 'val_rmse'
  with open(os.path.join(model_dir, 'report.html'), encoding='utf-8') as f:
    page = f.read()
  images = re.findall(r'<img src="([^"]+)"', page)
  assert images and all(
      os.path.getsize(os.path.join(model_dir, i)) > 1000 for i in images)
  assert f'data-key="eval.{trainer_heads.make_head(config).table_rows()[1][0]}"' in page


def test_export_outputs_fit_the_head(mixed_model):
  task_name, config, data, model_dir, _, _ = mixed_model
  export_dir = resolve_export(model_dir).path
  meta = ExportDir(export_dir).metadata
  assert meta['label']['task'] == task_name
  loaded = tf.saved_model.load(export_dir)
  assert {'serving_default', 'serving_raw'} <= set(loaded.signatures)
  instances = _instances(config, data, 40)
  predictor = predict.Predictor(model_dir)
  out = predictor.predict([
      predict.RowEncoder(config).encode(_fields(config, r))[0]
      for r in instances
  ])
  n = len(instances)
  if task_name == 'regression':
    assert set(out) == {'predictions'}
    assert out['predictions'].shape == (n, 1)
    assert (out['predictions'] > 0).all()  # expm1 of a log fit of y > 0
  else:
    k = 2 if task_name == 'binary' else 3
    assert set(out) == {'probabilities', 'classes'}
    probs = out['probabilities']
    assert probs.shape == (n, 1 if k == 2 else k)
    classes = [c.decode() for c in out['classes']]
    assert set(classes) <= set(config.label.classes)
    if k == 3:
      assert probs.sum(axis=1) == pytest.approx(np.ones(n), abs=1e-5)
      assert classes == [config.label.classes[i] for i in probs.argmax(axis=1)]


def _fields(config, instance):
  """A REST instance back as CSV fields (for the row encoder)."""
  return [
      '' if instance.get(c.name) is None else str(instance[c.name])
      for c in config.columns
      if c.name != config.label.column
  ]


def test_predict_cli_and_rest_agree_for_each_head(mixed_model, tmp_path):
  task_name, config, data, model_dir, _, _ = mixed_model
  scored = str(tmp_path / 'scored.jsonl')
  assert predict.main(
      ['--model-dir', model_dir, '--input', data, '--output', scored]) == 0
  with open(scored, encoding='utf-8') as f:
    lines = [json.loads(l) for l in f]
  good = [l for l in lines if 'error' not in l]
  assert len(lines) == ROWS + len(BAD_ROWS)
  assert len(good) == ROWS  # every bad row is reported, with its reason
  errors = [l['error'] for l in lines if 'error' in l]
  assert any("member: 'maybe' is not a boolean" in e for e in errors), errors
  assert any("signup: 'yesterday' is not a timestamp" in e for e in errors)
  fields = {
      'binary': {'probability', 'class'},
      'multiclass': {'class', 'probabilities'},
      'regression': {'prediction'}
  }[task_name]
  assert all(fields <= set(l) for l in good)
  instances = _instances(config, data, 25)
  server = Server(model_dir, str(tmp_path / 'server'))
  try:
    status, doc = server.post('predict', {'instances': instances})
    assert status == 200, doc
    rest = doc['predictions']
    # The CSV's first data rows are the instances, in order.
    first = good[:len(instances)]
    if task_name == 'regression':
      assert [r['predictions'][0] for r in rest
             ] == pytest.approx([l['prediction'] for l in first], rel=1e-5)
      status, doc = server.post('regress', {'examples': instances})
      assert status == 200, doc
      assert doc['results'] == pytest.approx([l['prediction'] for l in first],
                                             rel=1e-5)
      status, doc = server.post('classify', {'examples': instances})
      assert status == 400 and 'not a classifier' in doc['error']
      # TF Serving's gRPC Regress, on tf.Examples of every column type.
      client = grpc_client.Client(server.grpc_port)
      try:
        response = client.predictions.Regress(
            grpc_client.regress_request(instances, config, server.name),
            timeout=60)
        assert [r.value for r in response.result.regressions] == (
            pytest.approx([l['prediction'] for l in first], rel=1e-5))
        with pytest.raises(grpc.RpcError) as refused:
          client.predictions.Classify(
              grpc_client.classify_request(instances, config, server.name),
              timeout=60)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert 'not a classifier' in refused.value.details()
      finally:
        client.close()
    elif task_name == 'multiclass':
      assert [r['classes'] for r in rest] == [l['class'] for l in first]
      assert [r['probabilities'] for r in rest] == [
          pytest.approx([l['probabilities'][c] for c in config.label.classes],
                        abs=1e-6) for l in first
      ]
      status, doc = server.post('classify', {'examples': instances})
      assert status == 200, doc
      assert [[c for c, _ in r] for r in doc['results']
             ] == [list(config.label.classes)] * len(instances)
    else:
      assert [r['probabilities'][0] for r in rest
             ] == pytest.approx([l['probability'] for l in first], abs=1e-6)
      assert [r['classes'] for r in rest] == [l['class'] for l in first]
  finally:
    assert server.stop() == 0


# ------------------------------- a table with the pitfalls of a real one


def test_schema_init_to_a_trained_model_on_a_table_with_pitfalls(
    tmp_path, capsys):
  """Empty, constant, id, integer-code and leaking columns: `schema init`
  drafts around them and says so, preprocess and the trainer run on the
  draft, and preprocess's feature checks name each pitfall when a curated
  config adds them back."""
  data = datagen.write_lines(
      str(tmp_path / 'trips.csv'),
      datagen.trip_rows(1500, seed=13),
      header=datagen.TRIP_HEADER)
  out = str(tmp_path / 'schemas' / 'trips.yaml')
  assert schema_cli.main(
      ['init', '--input', data, '--label', 'tipped', '--output', out]) == 0
  printed = capsys.readouterr()
  lines = printed.out.splitlines()
  header = next(i for i, l in enumerate(lines) if l.startswith('column '))
  assert lines[header].split() == [
      'column', 'type', 'treatment', 'missing', 'distinct', 'why'
  ]
  table = {l.split()[0]: l for l in lines[header + 2:header + 11]}
  assert list(table) == datagen.TRIP_HEADER.split(',')
  for column, why in (('trip_id', 'identifier: 100% unique'),
                      ('pickup_area', 'integer code: 20 values'),
                      ('notes', 'empty'), ('vendor', "constant: 'acme'")):
    assert table[column].endswith(why), table[column]
  assert re.search(r'left out .* leakage: AUC 0\.99\d alone$', table['tip'])
  assert ('schema: warning: `tip` alone predicts the label with AUC 0.99'
          in printed.err)
  assert '4 features, 4 column(s) left out' in printed.out
  config = load_config(out)
  assert [c.name for c in config.feature_columns
         ] == ['pickup_area', 'distance', 'passengers', 'payment']

  pp = str(tmp_path / 'pp')
  # The drafted schema passes its own data: drift is judged at the split's
  # sizes, so preprocess publishes without --anomalies warn.
  manifest = preprocess.run(
      ['--config', out, '--input', data, '--output-dir', pp])
  assert manifest['rows']['train'] + manifest['rows']['eval'] == 1500
  with open(os.path.join(pp, 'anomalies.json'), encoding='utf-8') as f:
    assert json.load(f)['anomalies'] == []
  # The same checks on the drafted features: nothing to warn about.
  assert feature_warnings.check_preprocessed(
      config,
      stats_path=os.path.join(pp, 'stats', 'train.pb'),
      input_files=[data]) == []
  doc = trainer_task.run([
      '--preprocess-dir', pp, '--model-dir',
      str(tmp_path / 'model'), '--epochs', '15', '--batch-size', '64',
      '--early-stopping-patience', '4', '--verbose', '0', '--seed', '2'
  ])
  # It learns from the genuine columns, and is not handed the answer.
  assert 0.75 < doc['eval']['roc_auc'] < 0.98, doc['eval']

  curated = tmp_path / 'schemas' / 'trips_curated.yaml'
  with open(out, encoding='utf-8') as f:
    curated.write_text(
        datagen.trip_config_with_every_column(f.read()), encoding='utf-8')
  pp_curated = str(tmp_path / 'pp_curated')
  published = preprocess.run(
      ['--config',
       str(curated), '--input', data, '--output-dir', pp_curated])
  capsys.readouterr()
  findings = feature_warnings.check_preprocessed(
      load_config(str(curated)),
      stats_path=os.path.join(pp_curated, 'stats', 'train.pb'),
      input_files=[data])
  assert {
      f.column: f.check for f in findings
  } == {
      'trip_id': 'identifier',
      'pickup_area': 'integer_code',
      'notes': 'empty',
      'vendor': 'constant',
      'tip': 'leakage'
  }
  # The job's own warnings, their sample checked by a child while it ran,
  # are those found here after it.
  assert published['feature_warnings'] == [f.to_json() for f in findings]
  err = capsys.readouterr().err
  assert ('preprocess: warning: `tip` alone predicts the label with AUC 0.99'
          in err)
  assert 'preprocess: warning: notes has no value in the' in err
