"""trainer.push and trainer.rollback: only validated models reach serving.

Models: v1 is the shared toy model; v2 is trained on the same kind of rows
with the labels shuffled (and one more raw input, `note`), so it is worse
and changes the signature; v3 is v1's training run again, as good as v1.
They are compared on a held-out "golden" CSV of generated rows.
"""

import csv
import http.client
import json
import os
import random
import shutil
import threading
import time

import numpy as np
import pytest
import yaml

from core.config import Blessing
from core.config import MetricRule
from core.config import parse_config
from core.dir_lock import DirLock
from core.errors import ConfigError
from core.layout import ExportDir
from core.layout import ModelDir
from core.layout import ServingDir
from tests import datagen
from tests.conftest import ROOT
from tests.conftest import TOY_CONFIG
from tests.serving_client import Server
from trainer import blessing
from trainer import labelled_rows
from trainer import push
from trainer import rollback

# What the toy models must meet: lenient absolute rules (the toy label is
# noisy: v1's ROC AUC is about 0.7), strict change rules.
RULES = '''
validation:
  false_alarm_rate: 0.02
  metrics:
    roc_auc: {min: 0.6, max_decrease: 0.02}
    log_loss: {max_increase: 0.03}
  slices:
    columns: [city, height]
    buckets: 3
    min_rows: 60
    metrics:
      roc_auc: {max_decrease: 0.08}
'''


def _toy_text(extra=''):
  with open(TOY_CONFIG, encoding='utf-8') as f:
    return f.read() + extra


def _write(path, text):
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)
  return str(path)


def _push(*args):
  """(exit code, decision document or None) of an in-process push."""
  try:
    code = push.main([str(a) for a in args])
  except SystemExit as e:  # argparse
    return e.code, None
  return code, _last_decision


_last_decision = None
_run = push.run


def _recording_run(argv=None):
  global _last_decision
  _last_decision = _run(argv)
  return _last_decision


@pytest.fixture(autouse=True)
def _record_decisions(monkeypatch):
  """push.main's decision document, kept for the assertions (push.run
  itself runs unchanged)."""
  global _last_decision
  _last_decision = None
  monkeypatch.setattr(push, 'run', _recording_run)


def _copy_model(model_dir, dest):
  """A private copy of a model dir (push writes blessing.json and the
  report section into it)."""
  shutil.copytree(model_dir, dest)
  return str(dest)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope='module')
def work(tmp_path_factory):
  return tmp_path_factory.mktemp('push')


@pytest.fixture(scope='module')
def rules(work):
  return _write(work / 'rules.yaml', _toy_text(RULES))


@pytest.fixture(scope='module')
def golden(work):
  """Held-out labelled rows in the toy CSV dialect, never trained on."""
  return datagen.write_lines(
      str(work / 'golden.csv'),
      datagen.toy_rows(600, seed=41),
      header=datagen.TOY_HEADER)


@pytest.fixture(scope='module')
def v1(trainer_toy_model, work):
  return _copy_model(trainer_toy_model[0], work / 'v1')


@pytest.fixture(scope='module')
def v2(work):
  """Trained on shuffled labels, with `note` as one more raw input."""
  from pipeline import preprocess
  from trainer import task
  lines = datagen.toy_rows(1000, seed=11)
  labels = [line.rsplit(',', 1)[1] for line in lines]
  random.Random(5).shuffle(labels)
  shuffled = [
      line.rsplit(',', 1)[0] + ',' + label
      for line, label in zip(lines, labels)
  ]
  data = datagen.write_lines(
      str(work / 'shuffled.csv'), shuffled, header=datagen.TOY_HEADER)
  config = _write(
      work / 'toy_note.yaml',
      _toy_text().replace('  color: {}\n',
                          '  color: {}\n  note: {hash_buckets: 8}\n'))
  pre = str(work / 'v2_preprocess')
  preprocess.run([
      '--config', config, '--input', data, '--output-dir', pre, '--write-raw',
      '--num-shards', '1'
  ])
  model_dir = str(work / 'v2')
  task.run([
      '--preprocess-dir', pre, '--model-dir', model_dir, '--epochs', '3',
      '--batch-size', '64', '--verbose', '0', '--seed', '3'
  ])
  return model_dir


@pytest.fixture(scope='module')
def v3(trainer_toy_preprocessed, work):
  """v1's training run again: a model at least as good as v1."""
  from trainer import task
  model_dir = str(work / 'v3')
  task.run([
      '--preprocess-dir', trainer_toy_preprocessed[0], '--model-dir', model_dir,
      '--epochs', '15', '--batch-size', '64', '--early-stopping-patience', '4',
      '--verbose', '0', '--seed', '3'
  ])
  return model_dir


def _version(model_dir):
  return ModelDir(model_dir).versions()[-1]


# ------------------------------------------------------------------ config


@pytest.mark.parametrize('section, message', [
    ('validation: {metrics: {roc_auc: {least: 0.9}}}',
     "validation.metrics.roc_auc: unknown key 'least'"),
    ('validation: {metrics: {roc_auc: {min: high}}}',
     'validation.metrics.roc_auc.min: expected a finite number'),
    ('validation: {metrics: {roc_auc: {max_decrease: -0.1}}}',
     'validation.metrics.roc_auc.max_decrease: expected a finite number '
     'of at least 0'),
    ('validation: {metrics: {roc_auc: {min: 0.9, max: 0.8}}}',
     'validation.metrics.roc_auc: min 0.9 is above max 0.8'),
    ('validation: {metrics: {roc_auc: 0.9}}',
     'validation.metrics.roc_auc: expected a mapping'),
    ('validation: {slices: {columns: [note], metrics: {roc_auc: '
     '{max_decrease: 0.1}}}}',
     "validation.slices.columns: 'note' cannot slice"),
    ('validation: {slices: {columns: [city], metrics: {roc_auc: {min: 0.5}}}}',
     "validation.slices.metrics.roc_auc: unknown key 'min'"),
    ('validation: {slices: {columns: [city]}}',
     'validation.slices: columns are given but no metrics'),
    ('validation: {latency: {max_ms: 0}}',
     'validation.latency.max_ms: expected a finite number'),
    ('validation: {allow_signature_change: maybe}',
     'validation.allow_signature_change: expected true or false'),
    ('validation: {blessing: {}}', "validation: unknown key 'blessing'"),
])
def test_config_errors_name_the_key(section, message):
  with pytest.raises(ConfigError) as e:
    parse_config(_toy_text('\n' + section + '\n'))
  assert message in str(e.value)


def test_config_rules_are_parsed(rules):
  with open(rules, encoding='utf-8') as f:
    config = parse_config(f.read())
  b = config.blessing
  assert config.false_alarm_rate == 0.02
  assert [
      (r.metric, r.minimum, r.max_decrease, r.max_increase) for r in b.metrics
  ] == [('roc_auc', 0.6, 0.02, None), ('log_loss', None, None, 0.03)]
  assert b.slice_columns == ('city', 'height') and b.slice_min_rows == 60
  assert not b.allow_signature_change and b.max_latency_ms == 1000.0
  assert parse_config(_toy_text()).blessing.metrics == ()


def test_unknown_metric_is_a_usage_error(v1, work, capsys):
  bad = _write(work / 'bad_metric.yaml',
               _toy_text('\nvalidation: {metrics: {rmse: {max: 1}}}\n'))
  code, _ = _push('--model-dir', v1, '--serving-dir', work / 'unused',
                  '--config', bad)
  assert code == 2
  err = capsys.readouterr().err
  assert 'validation.metrics.rmse: not a metric of a binary model' in err
  assert 'roc_auc' in err  # the ones to choose from
  assert not os.path.exists(work / 'unused')


# ------------------------------------------------------------- first push


def test_first_push_uses_absolute_rules_only(v1, rules, work, capsys):
  base = str(work / 'first')
  strict = _write(
      work / 'strict.yaml',
      _toy_text('\nvalidation: {metrics: {roc_auc: {min: 0.95}}}\n'))
  code, doc = _push('--model-dir', v1, '--serving-dir', base, '--config',
                    strict)
  assert code == 1 and doc['decision'] == blessing.NOT_BLESSED
  assert ServingDir(base).versions() == []  # nothing published
  assert 'roc_auc' in doc['reasons'][0] and '>= 0.95' in doc['reasons'][0]
  assert 'decision: NOT_BLESSED' in capsys.readouterr().out

  code, doc = _push('--model-dir', v1, '--serving-dir', base, '--config', rules)
  out = capsys.readouterr().out
  assert code == 0 and doc['decision'] == blessing.BLESSED
  assert doc['baseline'] is None
  assert any('no served model yet' in n for n in doc['notes'])
  assert {c['check'] for c in doc['checks']} == {'metric', 'sanity'}
  # The candidate's own eval split, read from its raw/ rows.
  assert doc['data']['source'].endswith('raw/eval-*.tfrecord.gz')
  serving = ServingDir(base)
  assert serving.versions() == [_version(v1)]
  pushed = serving.export(_version(v1))
  assert pushed.exists() and pushed.config.name == 'toy'
  assert sorted(os.listdir(base)) == [str(_version(v1)), 'push_log.jsonl']
  # The decision beside the candidate, in its report, and in the log.
  with open(ModelDir(v1).blessing_path, encoding='utf-8') as f:
    assert json.load(f)['decision'] == 'BLESSED'
  with open(ModelDir(v1).report_path, encoding='utf-8') as f:
    page = f.read()
  assert page.count('<section id="push-decision">') == 1
  assert 'data-key="decision">BLESSED<' in page
  log = [json.loads(line) for line in open(serving.push_log_path)]
  assert [e['decision'] for e in log] == ['NOT_BLESSED', 'BLESSED']
  assert log[1]['pushed_version'] == _version(v1)
  assert log[1]['metrics']['candidate']['roc_auc'] > 0.6
  assert 'ROC AUC' in out and 'pushed as version' in out

  # The same model again: nothing to do.
  code, doc = _push('--model-dir', v1, '--serving-dir', base)
  assert code == 0 and doc['decision'] == 'ALREADY_SERVED'
  assert serving.versions() == [_version(v1)]


# --------------------------------------------------------- against a baseline


@pytest.fixture(scope='module')
def served_v1(v1, rules, work):
  """A serving directory into which v1 was pushed (the first push)."""
  path = str(work / 'served_v1')
  assert push.main(
      ['--model-dir', v1, '--serving-dir', path, '--config', rules]) == 0
  return path


def _served_by_v1(served_v1, path):
  """A private copy of `served_v1`: v1 served, one push in the log."""
  shutil.copytree(served_v1, path)
  return str(path)


def test_signature_change_blocks_unless_allowed(served_v1, v1, v2, rules,
                                                golden, work):
  base = _served_by_v1(served_v1, work / 'signature')
  code, doc = _push('--model-dir', v2, '--serving-dir', base, '--config', rules,
                    '--data', golden)
  assert code == 1
  sig = [c for c in doc['checks'] if c['name'] == 'signatures'][0]
  assert not sig['passed']
  assert "serving_raw input 'note' added (string [None])" in sig['detail']
  assert any('note' in r for r in doc['reasons'])

  allowing = _write(work / 'allowing.yaml',
                    _toy_text(RULES) + '  allow_signature_change: true\n')
  code, doc = _push('--model-dir', v2, '--serving-dir', base, '--config',
                    allowing, '--data', golden)
  sig = [c for c in doc['checks'] if c['name'] == 'signatures'][0]
  assert sig['passed'] and 'allowed by' in sig['detail']
  # Still worse than the served model: not pushed.
  assert code == 1 and ServingDir(base).versions() == [_version(v1)]
  assert not any('note' in r for r in doc['reasons'])


def test_force_pushes_with_the_reason_recorded(served_v1, v1, v2, rules, golden,
                                               work):
  base = _served_by_v1(served_v1, work / 'forced')
  code, _ = _push('--model-dir', v2, '--serving-dir', base, '--force')
  assert code == 2  # --force needs --reason
  code, doc = _push('--model-dir', v2, '--serving-dir', base, '--config', rules,
                    '--data', golden, '--force', '--reason',
                    'label meaning changed on purpose')
  assert code == 0 and doc['decision'] == blessing.NOT_BLESSED
  assert ServingDir(base).versions() == [_version(v1), _version(v2)]
  entry = [json.loads(line) for line in open(ServingDir(base).push_log_path)
          ][-1]
  assert entry['forced'] and entry['pushed_version'] == _version(v2)
  assert entry['force_reason'] == 'label meaning changed on purpose'
  assert entry['reasons'] == doc['reasons'] != []


def test_slice_regression_blocks(v1, golden):
  """A candidate as good overall but worse on one city: the slice rule
  blocks it. The candidate's outputs are v1's with the predictions for
  'oslo' turned around."""
  config = parse_config(_toy_text(RULES))
  export = ModelDir(v1).latest_export()
  rows = labelled_rows.from_files(export.config, golden)
  base = blessing.score(export, rows, 10)
  cand = blessing.score(export, rows, 10)
  city = rows.column(export.config, 'city')
  probabilities = cand.outputs['probabilities']
  oslo = city == 'oslo'
  probabilities[oslo] = 1.0 - probabilities[oslo]
  lenient = Blessing(
      metrics=(),
      slice_columns=('city',),
      slice_min_rows=60,
      slice_metrics=config.blessing.slice_metrics)
  doc = blessing.decide(lenient, rows, cand, base)
  assert doc['decision'] == blessing.NOT_BLESSED
  failed = [c for c in doc['checks'] if not c['passed']]
  assert [c['name'] for c in failed] == ['city=oslo roc_auc']
  assert failed[0]['change'] < -0.08
  by_slice = {e['slice']: e for e in doc['slices']['rows']['city']}
  assert by_slice['oslo']['gated'] and by_slice['oslo']['rows'] >= 60
  # A slice under min_rows is shown, not judged.
  assert not by_slice['(missing)']['gated']
  # Unchanged outputs pass the same rules.
  same = blessing.decide(lenient, rows, base, base)
  assert same['decision'] == blessing.BLESSED


def _constructed(tmp_path, task, outputs, name, classes=('low', 'mid', 'high')):
  """A Scored model of the mixed dataset with the given outputs (the
  decision reads a model's config, head, threshold and outputs only)."""
  with open(ROOT / 'tests' / 'data' / 'mixed.yaml', encoding='utf-8') as f:
    raw = yaml.safe_load(f)
  raw['label'] = {
      'multiclass': {
          'column': 'target',
          'task': 'multiclass',
          'classes': list(classes)
      },
      'regression': {
          'column': 'target',
          'task': 'regression',
          'log_target': True
      }
  }[task]
  if task == 'regression':
    raw['columns'][-1]['type'] = 'float'
    del raw['split']['stratify']
  config = parse_config(yaml.safe_dump(raw, sort_keys=False))
  export = ExportDir(str(tmp_path / name / '1'))
  os.makedirs(export.extra_dir)
  _write(export.metadata_path, json.dumps({'threshold': None}))
  return blessing.Scored(export, config, blessing.scoring_head(config), 0.5,
                         outputs, {}, 1.0)


def _rows(labels):
  return labelled_rows.LabelledRows('constructed', [b''] * len(labels),
                                    list(labels), {})


def test_regression_is_judged_by_rmse_in_label_units(tmp_path):
  rng = np.random.default_rng(0)
  y = rng.lognormal(1.0, 0.5, 2000)
  served = y + rng.normal(0, 0.2, y.size)
  worse = y + rng.normal(0, 0.6, y.size)
  rules = Blessing(
      metrics=(MetricRule('rmse', maximum=1.0, max_increase=0.05),))
  base = _constructed(tmp_path, 'regression',
                      {'predictions': served.reshape(-1, 1)}, 'base')
  cand = _constructed(tmp_path, 'regression',
                      {'predictions': worse.reshape(-1, 1)}, 'cand')
  doc = blessing.decide(rules, _rows(y), cand, base)
  # The export's outputs are in label units (log_target or not): the RMSE
  # is that of the values as they are.
  rmse = float(np.sqrt(np.mean((worse - y)**2)))
  assert doc['candidate']['metrics']['rmse'] == pytest.approx(rmse)
  assert doc['decision'] == blessing.NOT_BLESSED
  assert [c['name'] for c in doc['checks'] if not c['passed']] == ['rmse']
  assert blessing.decide(rules, _rows(y), base, base)['decision'] == (
      blessing.BLESSED)
  with pytest.raises(
      ConfigError,
      match='validation.metrics.roc_auc: not a '
      'metric of a regression model'):
    blessing.decide(
        Blessing(metrics=(MetricRule('roc_auc', minimum=0.5),)), _rows(y), cand,
        base)


def test_multiclass_is_judged_by_macro_f1(tmp_path):
  rng = np.random.default_rng(1)
  classes = ['low', 'mid', 'high']
  y = rng.integers(0, 3, 1500)
  good = np.full((y.size, 3), 0.1)
  good[np.arange(y.size), y] = 0.8
  # The candidate never predicts 'mid': macro F1 drops.
  bad = good.copy()
  bad[:, 1] = 0.0
  rules = Blessing(metrics=(MetricRule('macro_f1', max_decrease=0.02),))
  base = _constructed(tmp_path, 'multiclass', {'probabilities': good}, 'b')
  cand = _constructed(tmp_path, 'multiclass', {'probabilities': bad}, 'c')
  doc = blessing.decide(rules, _rows([classes[i] for i in y]), cand, base)
  assert doc['baseline']['metrics']['macro_f1'] == pytest.approx(1.0)
  assert doc['candidate']['metrics']['macro_f1'] < 0.7
  assert doc['decision'] == blessing.NOT_BLESSED
  assert doc['reasons'][0].startswith('macro_f1')

  # Classes in another order: the label changed, the metrics of the two
  # cannot be compared, and the change needs allow_signature_change.
  other = _constructed(
      tmp_path,
      'multiclass', {'probabilities': good[:, ::-1]},
      'o',
      classes=classes[::-1])
  doc = blessing.decide(rules, _rows([classes[i] for i in y]), other, base)
  assert doc['reasons'] == [
      "label changed from multiclass ['low', 'mid', 'high'] to multiclass "
      "['high', 'mid', 'low'] (set validation.allow_signature_change: true "
      'to allow)'
  ]
  assert doc['candidate']['metrics']['macro_f1'] == pytest.approx(1.0)
  assert doc['baseline']['metrics'] == {}


def test_usage_errors(v1, work, capsys):
  code, _ = _push('--model-dir', v1, '--serving-dir', work / 'u', '--split',
                  'nosuch')
  assert code == 2
  assert '--write-raw' in capsys.readouterr().err
  code, _ = _push('--model-dir', v1, '--serving-dir', work / 'u', '--data',
                  work / 'none-*.csv')
  assert code == 2
  assert 'no file matches' in capsys.readouterr().err
  code, _ = _push('--model-dir', work / 'nomodel', '--serving-dir', work / 'u')
  assert code == 2
  assert 'run python -m trainer.task first' in capsys.readouterr().err
  assert not os.path.exists(work / 'nomodel')
  empty = str(work / 'empty_base')
  os.makedirs(empty)
  assert rollback.main(['--serving-dir', empty]) == 2
  assert 'nothing to roll back to' in capsys.readouterr().err
  assert rollback.main(['--serving-dir', empty, '--to', '7']) == 2
  assert '--to 7: no such version' in capsys.readouterr().err


def test_no_push_while_a_trainer_writes_the_model_dir(v1, work, capsys):
  """The trainer's newest export can be there before the metrics.json that
  names its data: push waits for no half-written model directory, it stops
  and says which run holds it."""
  lock = ModelDir(v1).lock_path
  with DirLock(lock, 'the trainer'):
    code, decision = _push('--model-dir', v1, '--serving-dir', work / 'busy')
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and decision is None and len(err) == 1, err
  assert err[0].startswith(f'push: error: --model-dir {v1}: another run is '
                           f'writing it (pid {os.getpid()} on ')
  assert not os.path.exists(work / 'busy')
  assert not os.path.exists(lock)


# ------------------------------------------------- the loop, with a server


def _instances(n, seed):
  header = datagen.TOY_HEADER.split(',')
  out = []
  for line in datagen.toy_rows(n, seed=seed, missing_rate=0):
    fields = dict(zip(header, next(csv.reader([line], skipinitialspace=True))))
    out.append({
        'height': float(fields['height']),
        'visits': int(fields['visits']),
        'city': fields['city'],
        'color': fields['color']
    })
  return out


class Load:
  """Clients sending predict requests without pause, recording every
  answer's status and the version that answered."""

  def __init__(self, server, clients=2):
    self.server = server
    self.results = []  # (status, version)
    self._stop = threading.Event()
    self._lock = threading.Lock()
    body = json.dumps({'instances': _instances(8, seed=3)})
    self._threads = [
        threading.Thread(target=self._client, args=(body,), daemon=True)
        for _ in range(clients)
    ]
    for t in self._threads:
      t.start()

  def _client(self, body):
    path = f'/v1/models/{self.server.name}:predict'
    while not self._stop.is_set():
      try:
        conn = http.client.HTTPConnection(
            '127.0.0.1', self.server.port, timeout=30)
        conn.request('POST', path, body=body)
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        conn.close()
        result = (resp.status, doc.get('model_version'))
      except (OSError, ValueError) as e:
        result = (type(e).__name__, None)
      with self._lock:
        self.results.append(result)

  def versions_since(self, start):
    with self._lock:
      return [v for _, v in self.results[start:]]

  def __len__(self):
    with self._lock:
      return len(self.results)

  def stop(self):
    self._stop.set()
    for t in self._threads:
      t.join(60)


def _wait_served(load, version, timeout=90):
  """Waits until answers come from `version`; returns when they do."""
  deadline = time.time() + timeout
  start = len(load)
  while time.time() < deadline:
    if str(version) in load.versions_since(start):
      return
    time.sleep(0.2)
  raise AssertionError(f'version {version} never served; answers came from '
                       f'{sorted(set(load.versions_since(start)), key=str)}')


def test_retraining_loop_with_a_running_server(served_v1, v1, v2, v3, rules,
                                               golden, work):
  base = _served_by_v1(served_v1, work / 'loop')
  server = Server(
      base,
      str(work / 'server'),
      '--poll-seconds',
      '0.3',
      '--grpc-port',
      '-1',
      source_flag='--model-base-path')
  load = None
  try:
    load = Load(server)
    _wait_served(load, _version(v1))

    # v2 (shuffled labels) is worse on the golden rows: not blessed, not
    # published, never served.
    code, doc = _push('--model-dir', v2, '--serving-dir', base, '--config',
                      rules, '--data', golden)
    assert code == 1 and doc['decision'] == blessing.NOT_BLESSED
    assert any(
        r.startswith('roc_auc') and 'lower allowed' in r
        for r in doc['reasons']), doc['reasons']
    assert doc['candidate']['metrics']['roc_auc'] < (
        doc['baseline']['metrics']['roc_auc'] - 0.02)
    assert ServingDir(base).versions() == [_version(v1)]

    # v3 is as good: pushed and swapped in.
    code, doc = _push('--model-dir', v3, '--serving-dir', base, '--config',
                      rules, '--data', golden)
    assert code == 0, doc['reasons']
    assert doc['baseline']['version'] == _version(v1)
    pushed = doc['pushed']['version']
    assert ServingDir(base).versions() == [_version(v1), pushed]
    _wait_served(load, pushed)

    # Roll back: v1 again; then --to brings v3 back, nothing lost.
    assert rollback.main(['--serving-dir', base]) == 0
    assert ServingDir(base).versions() == [_version(v1)]
    assert ServingDir(base).rolled_back_versions() == [pushed]
    _wait_served(load, _version(v1))
    assert rollback.main(['--serving-dir', base, '--to', str(pushed)]) == 0
    assert ServingDir(base).versions() == [_version(v1), pushed]
    _wait_served(load, pushed)
  finally:
    if load is not None:
      load.stop()
    assert server.stop() == 0
  statuses = [s for s, _ in load.results]
  assert len(statuses) > 20
  assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
  served = {v for _, v in load.results}
  assert served == {str(_version(v1)), str(pushed)}
  assert str(_version(v2)) not in served
  log = [json.loads(line) for line in open(ServingDir(base).push_log_path)]
  assert [(e['action'], e.get('decision')) for e in log] == [
      ('push', 'BLESSED'), ('push', 'NOT_BLESSED'), ('push', 'BLESSED'),
      ('rollback', None), ('rollback', None)
  ]
  assert log[3]['from'] == pushed and log[3]['to'] == _version(v1)
  assert log[4]['restored'] == pushed
