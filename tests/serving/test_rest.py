"""python -m trainer.serve: the real server, as a subprocess, over HTTP.

Predictions over REST must equal the in-process SavedModel's for the same
rows (row and columnar format, :classify); bad requests get a 400 naming the
field and the instance, and the server keeps serving; status and metadata
have TF Serving's shapes; a new version is hot-swapped; the request log is
what pipeline.skew reads, and it catches a shifted feature; SIGTERM drains,
flushes the log and exits 0.

The server runs on a copy of the toy model's directory (tests add versions to
it) and binds port 0; it prints the port it got.
"""

import csv
import http.client
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from core.config import load_config
from core.layout import ExportDir
from core.layout import ModelDir
from pipeline import skew
from tests import datagen
from tests.conftest import ROOT
from tests.conftest import TOY_CONFIG
from tests.serving.conftest import MAX_BODY
from tests.serving.conftest import MAX_INSTANCES
from tests.serving_client import Server

_SENTINEL = 987654.125
_SENTINEL_TEXT = '987654.125'

# ------------------------------------------------------------------- helpers


def toy_instances(n, seed):
  """Raw feature objects from generated toy CSV rows; missing -> null."""
  config = load_config(TOY_CONFIG)
  header = datagen.TOY_HEADER.split(',')
  kinds = {c.name: c.type for c in config.feature_columns}
  instances = []
  for line in datagen.toy_rows(n, seed=seed):
    fields = next(csv.reader([line], skipinitialspace=True))
    row = {}
    for name, value in zip(header, fields):
      if name not in kinds:
        continue
      value = value.strip()  # noqa: PLW2901 - the same field, trimmed
      if value in config.missing_values:
        row[name] = None
      elif kinds[name] == 'int':
        row[name] = int(value)
      elif kinds[name] == 'float':
        row[name] = float(value)
      else:
        row[name] = value
    instances.append(row)
  return instances


def close(actual, expected):
  np.testing.assert_allclose(
      np.asarray(actual, np.float64),
      np.asarray(expected, np.float64),
      rtol=1e-5,
      atol=1e-6)


def wait_for(predicate, timeout=60, what='condition'):
  deadline = time.time() + timeout
  while time.time() < deadline:
    value = predicate()
    if value:
      return value
    time.sleep(0.2)
  raise AssertionError(f'timed out waiting for {what}')


def settled_count(path):
  """Lines in the log once earlier requests' lines have all been written
  (the log is written by a background thread)."""
  count = -1
  while True:
    time.sleep(0.3)
    now = len(read_lines(path))
    if now == count:
      return now
    count = now


def read_lines(path):
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope='module')
def rows():
  return toy_instances(120, seed=31)


# --------------------------------------------------------------- predictions


def test_predict_rows_and_columns_equal_in_process(server, reference, rows,
                                                   model_copy):
  _, version = model_copy
  batch = rows[:MAX_INSTANCES]
  assert any(None in r.values() for r in batch)  # missing values included
  assert any(r['visits'] is None for r in batch)  # a null int among them
  expected_p, expected_c = reference.via_examples(batch)

  status, doc = server.post('predict', {'instances': batch})
  assert status == 200, doc
  assert doc['model_version'] == str(version)
  got = doc['predictions']
  assert len(got) == len(batch)
  close([p['probabilities'][0] for p in got], expected_p)
  assert [p['classes'] for p in got] == expected_c

  # serving_raw in-process agrees on rows it can express (no null int).
  plain = [i for i, r in enumerate(batch) if r['visits'] is not None]
  raw_p, raw_c = reference.via_raw([batch[i] for i in plain])
  close([got[i]['probabilities'][0] for i in plain], raw_p)
  assert [got[i]['classes'] for i in plain] == raw_c

  columns = {name: [r[name] for r in batch] for name in batch[0]}
  status, doc = server.post('predict', {'inputs': columns})
  assert status == 200, doc
  close([p[0] for p in doc['outputs']['probabilities']], expected_p)
  assert doc['outputs']['classes'] == expected_c

  status, doc = server.post('predict', {
      'instances': batch,
      'signature_name': 'serving_default'
  })
  assert status == 200, doc
  close([p['probabilities'][0] for p in doc['predictions']], expected_p)

  status, doc = server.post(
      'predict', {'instances': batch[:3]}, version=version)
  assert status == 200 and len(doc['predictions']) == 3


def test_classify_equals_in_process(server, reference, rows):
  batch = rows[:40]
  expected_p, _ = reference.via_examples(batch)
  config = reference.config
  negative = [c for c in config.label.classes if c != config.label.positive][0]
  status, doc = server.post('classify', {'examples': batch})
  assert status == 200, doc
  assert len(doc['results']) == len(batch)
  for result, p in zip(doc['results'], expected_p):
    (neg_label, neg_score), (pos_label, pos_score) = result
    assert (neg_label, pos_label) == (negative, config.label.positive)
    close([pos_score, neg_score], [p, 1 - p])

  # tf.Example style: a common "context", one-value lists, [] for missing.
  name = next(iter(batch[0]))
  context = {name: batch[0][name]}
  examples = [{
      k: [v] if v is not None else [] for k, v in r.items() if k != name
  } for r in batch[:5]]
  status, doc = server.post('classify', {
      'context': context,
      'examples': examples
  })
  assert status == 200, doc
  same = [dict(r, **context) for r in batch[:5]]
  close([r[1][1] for r in doc['results']], reference.via_examples(same)[0])


def test_concurrent_requests_are_batched_without_mixing_rows(
    server, reference, rows):
  expected_p, _ = reference.via_examples(rows)
  results = [None] * len(rows)

  def client(indices):
    for i in indices:
      status, doc = server.post('predict', {'instances': [rows[i]]})
      results[i] = (status, doc['predictions'][0]['probabilities'][0]
                    if status == 200 else doc)

  threads = [
      threading.Thread(target=client, args=(range(k, len(rows), 16),))
      for k in range(16)
  ]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert all(r[0] == 200 for r in results), results
  close([r[1] for r in results], expected_p)


# ------------------------------------------------------------- status, meta


def test_status_and_metadata_have_tf_serving_shapes(server, model_copy,
                                                    reference):
  _, version = model_copy
  status, doc, _ = server.request('GET', f'/v1/models/{server.name}')
  assert status == 200
  assert doc == {
      'model_version_status': [{
          'version': str(version),
          'state': 'AVAILABLE',
          'status': {
              'error_code': 'OK',
              'error_message': ''
          }
      }]
  }
  status, doc, _ = server.request(
      'GET', f'/v1/models/{server.name}/versions/{version}')
  assert status == 200 and doc['model_version_status'][0]['state'] == (
      'AVAILABLE')

  status, doc, _ = server.request('GET', f'/v1/models/{server.name}/metadata')
  assert status == 200
  assert doc['model_spec'] == {
      'name': server.name,
      'signature_name': '',
      'version': str(version)
  }
  sigs = doc['metadata']['signature_def']['signature_def']
  assert set(sigs) == {ExportDir.DEFAULT_SIGNATURE, ExportDir.RAW_SIGNATURE}
  default = sigs[ExportDir.DEFAULT_SIGNATURE]
  assert default['method_name'] == 'tensorflow/serving/predict'
  assert default['inputs'][ExportDir.EXAMPLES_INPUT]['dtype'] == 'DT_STRING'
  assert default['inputs'][ExportDir.EXAMPLES_INPUT]['tensor_shape'] == {
      'dim': [{
          'size': '-1',
          'name': ''
      }],
      'unknown_rank': False
  }
  raw = sigs[ExportDir.RAW_SIGNATURE]
  dtypes = {'int': 'DT_INT64', 'float': 'DT_FLOAT', 'string': 'DT_STRING'}
  assert {
      k: v['dtype'] for k, v in raw['inputs'].items()
  } == {
      name: dtypes[kind] for name, kind in reference.kinds.items()
  }
  for outputs in (default['outputs'], raw['outputs']):
    assert outputs['probabilities']['dtype'] == 'DT_FLOAT'
    assert [d['size'] for d in outputs['probabilities']['tensor_shape']['dim']
           ] == ['-1', '1']
    assert outputs['classes']['dtype'] == 'DT_STRING'

  status, doc, _ = server.request('GET', '/healthz')
  assert status == 200 and doc['status'] == 'ok'
  assert server.request('GET', '/v1/models/nosuchmodel')[0] == 404
  assert server.request('GET',
                        f'/v1/models/{server.name}/versions/7')[0] == (404)
  status, doc = server.post('predict', {'instances': []}, version=7)
  assert status == 404 and 'error' in doc
  status, doc, _ = server.request('GET', f'/v1/models/{server.name}:predict')
  assert status == 405 and 'error' in doc


# ---------------------------------------------------------------- bad input


def test_bad_requests_get_400_naming_field_and_instance(server, rows):
  good = rows[:3]
  feature_kinds = load_config(TOY_CONFIG)
  label = feature_kinds.label.column

  def with_change(i, **change):
    batch = [dict(r) for r in good]
    for k, v in change.items():
      if v is KeyError:
        del batch[i][k]
      else:
        batch[i][k] = v
    return {'instances': batch}

  def token(i, name, text):
    """A body whose value for `name` in instance i is the literal `text`
    (JSON tokens json.dumps would not write)."""
    body = json.dumps(with_change(i, **{name: _SENTINEL}))
    assert body.count(_SENTINEL_TEXT) == 1
    return body.replace(_SENTINEL_TEXT, text)

  big = dict(good[0], city='x' * (MAX_BODY + 10))
  cases = [
      # (verb, body, fragments the error must contain)
      ('predict', '{"instances": [', ['not valid JSON']),
      ('predict', b'\xff\xfe{"instances"', ['not valid JSON']),
      ('predict', '[' * 30000 + ']' * 30000, ['JSON', 'nested']),
      ('predict', '', ['not valid JSON']),
      ('predict', [good[0]], ['expected a JSON object']),
      ('predict', with_change(2, visits=KeyError),
       ['instances[2]', "'visits'", 'missing']),
      ('predict', with_change(1, visits='12'),
       ['instances[1]', "'visits'", "string '12'"]),
      ('predict', with_change(1, visits=3.5),
       ['instances[1]', "'visits'", 'fraction']),
      ('predict', with_change(0, visits=True), ['instances[0]', "'visits'"]),
      ('predict', with_change(2, visits=10**30),
       ['instances[2]', "'visits'", '64-bit integer']),
      ('predict', with_change(1, height='tall'), ['instances[1]', "'height'"]),
      ('predict', with_change(1, city=7), ['instances[1]', "'city'", 'string']),
      ('predict', with_change(1, city=['paris']), ['instances[1]', "'city'"]),
      ('predict', with_change(1, city={'b64': 'cGFyaXM='}),
       ['instances[1]', "'city'", 'binary']),
      ('predict', with_change(2, shoe_size=43),
       ['instances[2]', "'shoe_size'", 'unknown']),
      ('predict', with_change(0, **{label: 'yes'}),
       ['instances[0]', repr(label), 'label']),
      ('predict', token(1, 'height',
                        'NaN'), ['instances[1]', "'height'", 'NaN']),
      ('predict', token(2, 'height',
                        '-Infinity'), ['instances[2]', "'height'", 'Infinity']),
      ('predict', token(0, 'height',
                        '1e999'), ['instances[0]', "'height'", 'finite']),
      ('predict', with_change(0, height=1e39),
       ['instances[0]', "'height'", '32-bit float']),
      ('predict', token(1, 'city',
                        '"\\ud800"'), ['instances[1]', "'city'", 'Unicode']),
      ('predict', {
          'instances': [good[0]] * (MAX_INSTANCES + 1)
      }, ['instances', str(MAX_INSTANCES + 1), 'limit']),
      ('predict', {
          'instances': [big]
      }, ['limit', str(MAX_BODY)]),
      ('predict', {
          'instances': []
      }, ['empty']),
      ('predict', {
          'instances': good,
          'inputs': {}
      }, ['exactly one']),
      ('predict', {
          'rows': good
      }, ["'rows'"]),
      ('predict', {
          'instances': good,
          'signature_name': 'nope'
      }, ["'nope'", 'serving_raw']),
      ('predict', {
          'inputs': {
              k: [r[k] for r in good] for k in good[0] if k != 'city'
          }
      }, ['inputs', "'city'"]),
      ('predict', {
          'inputs':
              dict({k: [r[k] for r in good] for k in good[0]}, visits=[1, 2])
      }, ['inputs', "'visits'", 'values']),
      ('predict', {
          'inputs':
              dict({k: [r[k] for r in good] for k in good[0]},
                   visits=[1, 2, 'x'])
      }, ['instance 2', "'visits'"]),
      ('classify', {
          'examples': [dict(good[0], visits=[1, 2])]
      }, ['examples[0]', "'visits'", 'one value']),
      ('classify', {
          'context': {
              'city': 'oslo'
          },
          'examples': good
      }, ['examples[0]', "'city'", 'context']),
      ('classify', {
          'examples': [good[0], {
              'height': 1.0
          }]
      }, ['examples[1]', 'missing feature']),
      ('regress', {
          'examples': good
      }, ['is a classifier', ':classify']),
  ]
  for verb, body, fragments in cases:
    status, doc = server.post(verb, body)
    assert status == 400, (verb, str(body)[:200], status, doc)
    assert set(doc) == {'error'}, doc
    for fragment in fragments:
      assert fragment in doc['error'], (str(body)[:200], doc['error'])

  # A body over the limit without a Content-Length (chunked) is refused too.
  conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=60)
  chunks = (
      b'{"instances": [' + b' ' * 4096 for _ in range(MAX_BODY // 4096 + 2))
  conn.request(
      'POST',
      f'/v1/models/{server.name}:predict',
      body=chunks,
      encode_chunked=True)
  resp = conn.getresponse()
  assert resp.status == 400 and 'limit' in json.loads(resp.read())['error']
  conn.close()

  # Still serving, correctly, after all of that.
  assert server.proc.poll() is None
  status, doc = server.post('predict', {'instances': good})
  assert status == 200 and len(doc['predictions']) == 3
  assert 'Traceback' not in server.stderr()


def test_null_is_missing_and_imputed_like_an_absent_value(
    server, reference, rows):
  base = dict(rows[0])
  nulls = {name: None for name in base}
  batch = [base, nulls] + [dict(base, **{k: None}) for k in base]
  status, doc = server.post('predict', {'instances': batch})
  assert status == 200, doc
  close([p['probabilities'][0] for p in doc['predictions']],
        reference.via_examples(batch)[0])


# ----------------------------------------------------------------- hot swap


def test_new_version_is_hot_swapped_without_disturbing_requests(
    server, model_copy, reference, rows):
  model_dir, version = model_copy
  root = os.path.join(model_dir, ModelDir.EXPORT_DIR)
  new = version + 1
  expected_p, _ = reference.via_examples(rows)
  stop = threading.Event()
  seen, failures = [], []

  def client(k):
    i = k
    while not stop.is_set():
      status, doc = server.post('predict', {'instances': [rows[i]]})
      if status != 200:
        failures.append(doc)
        return
      p = doc['predictions'][0]['probabilities'][0]
      if not math.isclose(p, expected_p[i], rel_tol=1e-5, abs_tol=1e-6):
        failures.append((i, p, expected_p[i]))
      seen.append((k, int(doc['model_version'])))
      i = (i + 4) % len(rows)

  threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
  for t in threads:
    t.start()
  try:
    time.sleep(0.5)
    # Copied in under a temporary name and renamed, as the exporter does.
    staging = os.path.join(root, f'.copy-{new}')
    shutil.copytree(os.path.join(root, str(version)), staging)
    os.rename(staging, os.path.join(root, str(new)))

    def swapped():
      status, doc, _ = server.request('GET', f'/v1/models/{server.name}')
      return [
          e['version']
          for e in doc['model_version_status']
          if e['state'] == 'AVAILABLE'
      ] == [str(new)]

    wait_for(swapped, what='the new version to be served')
    time.sleep(0.5)
  finally:
    stop.set()
    for t in threads:
      t.join()
  assert not failures, failures[:5]
  versions = {v for _, v in seen}
  assert versions == {version, new}, versions
  for k in range(4):  # each client saw the old version, then only the new
    mine = [v for c, v in seen if c == k]
    assert mine == sorted(mine)
  status, doc = server.post('predict', {'instances': rows[:2]})
  assert status == 200 and doc['model_version'] == str(new)
  status, doc = server.post('predict', {'instances': rows[:2]}, version=version)
  assert status == 404  # the old version is unloaded, as in TF Serving

  # A broken newer version is reported and not swapped in.
  broken = os.path.join(root, str(new + 1))
  os.makedirs(broken + '.tmp')
  with open(os.path.join(broken + '.tmp', 'saved_model.pb'), 'wb') as f:
    f.write(b'not a SavedModel')
  os.rename(broken + '.tmp', broken)

  def failed():
    _, doc, _ = server.request('GET', f'/v1/models/{server.name}')
    return [e for e in doc['model_version_status'] if e['state'] == 'END']

  entry = wait_for(failed, what='the broken version to be reported')[0]
  assert entry['version'] == str(new + 1)
  assert entry['status']['error_code'] != 'OK'
  status, doc = server.post('predict', {'instances': rows[:2]})
  assert status == 200 and doc['model_version'] == str(new)
  shutil.rmtree(broken)


# ------------------------------------------------------- request log + skew


def test_request_log_feeds_skew_check(server, trainer_toy_preprocessed,
                                      tmp_path):
  preprocess_dir, _ = trainer_toy_preprocessed
  config = load_config(TOY_CONFIG)
  shifted_feature = next(
      c.name for c in config.feature_columns if c.type == 'float')

  def serve_and_collect(instances, out_name):
    start = settled_count(server.log_path)
    sent = []
    for i in range(0, len(instances), 50):
      chunk = instances[i:i + 50]
      status, doc = server.post('predict', {'instances': chunk})
      assert status == 200, doc
      sent += [(row, p) for row, p in zip(chunk, doc['predictions'])]

    def logged():
      lines = read_lines(server.log_path)
      return lines if len(lines) >= start + len(sent) else None

    lines = wait_for(logged, what='the request log')[start:]
    assert len(lines) == len(sent)
    path = str(tmp_path / out_name)
    with open(path, 'w', encoding='utf-8') as f:
      for line, (row, pred) in zip(lines, sent):
        assert line['features'] == row  # as received, nulls included
        assert line['prediction'] == {
            'probability': pred['probabilities'][0],
            'class': pred['classes']
        }
        assert isinstance(line['model_version'], int)
        assert re.match(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d', line['time'])
        f.write(json.dumps(line) + '\n')
    return path

  clean = serve_and_collect(toy_instances(500, seed=41), 'clean.jsonl')
  shifted_rows = toy_instances(500, seed=42)
  for row in shifted_rows:
    if row[shifted_feature] is not None:
      row[shifted_feature] += 25.0
  shifted = serve_and_collect(shifted_rows, 'shifted.jsonl')

  code = skew.main([
      '--preprocess-dir', preprocess_dir, '--serving-data', clean,
      '--report-dir',
      str(tmp_path / 'clean_report')
  ])
  with open(tmp_path / 'clean_report' / skew.SKEW_JSON) as f:
    doc = json.load(f)
  assert doc['serving_data']['rows_used'] == 500
  measured = {m['feature']: m for m in doc['features']}
  assert not measured[shifted_feature]['flagged'], measured[shifted_feature]
  assert shifted_feature not in {a['feature'] for a in doc['anomalies']}
  assert code == 0, doc['anomalies']  # same population: nothing at all

  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONWARNINGS='ignore')
  result = subprocess.run([
      sys.executable, '-m', 'pipeline.skew', '--preprocess-dir', preprocess_dir,
      '--serving-data', shifted, '--report-dir',
      str(tmp_path / 'shifted_report')
  ],
                          cwd=str(ROOT),
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=300)
  assert result.returncode == 1, result.stderr[-3000:]
  assert shifted_feature in result.stderr
  with open(tmp_path / 'shifted_report' / skew.SKEW_JSON) as f:
    doc = json.load(f)
  assert shifted_feature in {a['feature'] for a in doc['anomalies']}
  measured = {m['feature']: m for m in doc['features']}
  assert measured[shifted_feature]['flagged']
  assert measured[shifted_feature]['value'] > measured[shifted_feature][
      'threshold']
  assert doc['serving_data']['formats'] == ['jsonl']
  assert doc['serving_data']['rows_used'] == 500


# ------------------------------------------------- rotation and SIGTERM


def test_sigterm_drains_flushes_rotated_log_and_exits_0(model_copy, tmp_path,
                                                        rows):
  model_dir, _ = model_copy
  log_path = str(tmp_path / 'logs' / 'requests.jsonl')
  s = Server(model_dir, str(tmp_path), '--request-log', log_path,
             '--request-log-max-bytes', '4000', '--request-log-backups', '200',
             '--poll-seconds', '0')
  answered, problems = [], []
  stop = threading.Event()

  def client(k):
    n = 0
    while not stop.is_set():
      batch = rows[(k * 7 + n) % 100:(k * 7 + n) % 100 + 5]
      n += 1
      try:
        status, doc = s.post('predict', {'instances': batch})
      except (OSError, http.client.HTTPException):
        return  # refused or reset: the server stopped listening
      if status != 200:
        problems.append((status, doc))
        return
      answered.append(len(batch))

  threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
  for t in threads:
    t.start()
  wait_for(lambda: sum(answered) >= 200, what='traffic')
  code = s.stop(signal.SIGTERM)
  stop.set()
  for t in threads:
    t.join()
  assert code == 0, s.stderr()[-3000:]
  assert not problems, problems[:3]
  files = sorted(os.listdir(tmp_path / 'logs'))
  assert 'requests.jsonl' in files and 'requests.jsonl.1' in files, files
  assert all(re.fullmatch(r'requests\.jsonl(\.\d+)?', f) for f in files)
  lines = []
  for name in files:
    path = tmp_path / 'logs' / name
    assert os.path.getsize(path) <= 4000
    lines += read_lines(str(path))
  # Every instance answered was logged (flushed at shutdown), no more.
  assert len(lines) == sum(answered)
  assert 'Traceback' not in s.stderr()


def test_no_model_is_a_usage_error(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONWARNINGS='ignore')
  result = subprocess.run([
      sys.executable, '-m', 'trainer.serve', '--model-dir',
      str(tmp_path), '--port', '0'
  ],
                          cwd=str(ROOT),
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'no exported model' in result.stderr
  assert result.stdout == ''


def test_typed_columns_are_read_like_training_values():
  """bool, timestamp and list columns: the spellings core.values accepts,
  normalised to what the signatures carry; anything else a 400 naming the
  feature and instance."""
  from serving import request_checks  # pylint: disable=import-outside-toplevel
  config = load_config(str(ROOT / 'tests' / 'data' / 'mixed.yaml'))
  schema = request_checks.RowSchema(config)
  by_type = {c.name: c for c in config.feature_columns}
  boolean = next(n for n, c in by_type.items() if c.type == 'bool')
  stamp = next(n for n, c in by_type.items() if c.type == 'timestamp')
  listed = next(n for n, c in by_type.items() if c.is_list)
  sep = by_type[listed].separator
  base = {n: None for n in schema.names}

  def one(**values):
    return request_checks.parse_predict({
        'instances': [dict(base, **values)]
    }, schema, 10).rows[0]

  assert one(**{boolean: True})[boolean] == 1
  assert one(**{boolean: 'no'})[boolean] == 0
  assert one(**{stamp: '1970-01-02T00:00:00Z'})[stamp] == 86400
  assert one(**{stamp: 86400})[stamp] == 86400
  assert one(**{listed: f'a{sep} b{sep}'})[listed] == ['a', 'b']
  assert one(**{listed: ['a', ' ', 'c']})[listed] == ['a', 'c']
  assert one()[listed] is None
  for bad in ({
      boolean: 'maybe'
  }, {
      boolean: 2
  }, {
      stamp: 'not a date'
  }, {
      stamp: True
  }, {
      listed: ['a', 1]
  }, {
      listed: 5
  }):
    with pytest.raises(request_checks.RequestError) as e:
      request_checks.parse_predict({'instances': [base, dict(base, **bad)]},
                                   schema, 10)
    name = next(iter(bad))
    assert e.value.status == 400
    assert 'instances[1]' in e.value.message and repr(name) in e.value.message


def test_a_version_being_reloaded_is_not_also_listed_as_failed(tmp_path):
  """A version that failed and changed since is LOADING, not LOADING and
  END at once."""
  from serving.model_store import ModelStore  # pylint: disable=g-import-not-at-top
  store = ModelStore(str(tmp_path), poll_seconds=0)
  store._failed[7] = ((('saved_model.pb', 1),), 'bad graph')  # pylint: disable=protected-access
  store._failed[5] = ((('saved_model.pb', 1),), 'older failure')  # pylint: disable=protected-access
  assert [(e['version'], e['state']) for e in store.status()] == [('5', 'END'),
                                                                  ('7', 'END')]
  store.loading = 7
  assert [(e['version'], e['state']) for e in store.status()] == [('7',
                                                                   'LOADING'),
                                                                  ('5', 'END')]
  assert [e['state'] for e in store.status(7)] == ['LOADING']
