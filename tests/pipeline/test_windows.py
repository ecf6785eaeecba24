"""Window aggregations (`windows:` in a dataset config, pipeline/windows.py).

The config rejects bad windows by key, value and what is allowed; the Beam
transform gives exact, hand-checked aggregates (ties, missing values, the
window boundary); Beam and serving (history sent with the instance) agree on
generated data; and the real preprocess job carries the derived columns from
a generated CSV through TFDV and the transform.
"""

import datetime
import glob
import json
import math
import os
import random

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import yaml

from core import windows as core_windows
from core.config import load_config
from core.config import parse_config
from core.config import WindowFeature
from core.errors import ConfigError
from pipeline import cleanse
from pipeline import features
from pipeline import preprocess
from pipeline import schema as schema_cli
from pipeline import split
from pipeline import windows
from pipeline.sources import RawChunk
from serving import request_checks
from tests import datagen
from tests.conftest import ROOT
from tests.serving_client import Server
from trainer import predict
from trainer import task

EVENTS_CONFIG = str(ROOT / 'tests' / 'data' / 'events.yaml')
EVENTS_HEADER = 'shop,user,at,amount,channel,fraud'
_T0 = 1_717_200_000  # 2024-06-01


def _feature_values(feature_map, name):
  """A tf.Example feature's values as a list, None when it is absent."""
  if name not in feature_map:
    return None
  f = feature_map[name]
  return (list(f.bytes_list.value) or list(f.int64_list.value) or
          list(f.float_list.value))


def event_rows(n, seed=0, missing_rate=0.03):
  """CSV lines (no header) for tests/data/events.yaml: a few shops and users,
  a month of events with repeated seconds (ties), some values missing; fraud
  is more likely for an amount far above its shop's usual."""
  rng = random.Random(seed)
  scale = {f's{i}': rng.uniform(10, 200) for i in range(12)}
  rows = []
  for _ in range(n):
    shop = rng.choice(list(scale))
    user = rng.randint(1, 25)
    at = _T0 + rng.randint(0, 30 * 86400 // 600) * 600  # 10-minute grid
    amount = round(rng.lognormvariate(math.log(scale[shop]), 0.8), 2)
    fraud = 'yes' if amount > 3 * scale[shop] or rng.random() < 0.05 else 'no'
    stamp = (
        datetime.datetime.fromtimestamp(
            at, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
        if rng.random() < 0.5 else str(at))
    fields = [
        shop,
        str(user), stamp,
        str(amount),
        rng.choice(['web', 'app', 'store']), fraud
    ]
    for j in range(4):
      if rng.random() < missing_rate:
        fields[j] = '?'
    rows.append(','.join(fields))
  return rows


def _events_dict():
  with open(EVENTS_CONFIG, encoding='utf-8') as f:
    return yaml.safe_load(f)


def _error(mutate):
  raw = _events_dict()
  mutate(raw)
  with pytest.raises(ConfigError) as e:
    parse_config(yaml.safe_dump(raw))
  return str(e.value)


# --------------------------------------------------------------------- config


def test_config_derives_float_columns_and_numeric_features():
  config = load_config(EVENTS_CONFIG)
  names = [w.name for w in config.windows]
  assert names == [
      'shop_events_7d', 'shop_amount_mean_7d', 'shop_amount_max_1d',
      'user_amount_sum_12h'
  ]
  assert [w.seconds for w in config.windows
         ] == [7 * 86400, 7 * 86400, 86400, 12 * 3600]
  # Derived columns: carried and fed like any float column, not in the file.
  assert config.column_names == [
      'shop', 'user', 'at', 'amount', 'channel', 'fraud'
  ]
  assert [c.name for c in config.derived_columns] == names
  assert all(config.column(n).type == 'float' for n in names)
  carried = [c.name for c in config.raw_columns]
  assert carried == config.column_names + names  # entity/timestamp carried
  assert [c.name for c in config.feature_columns
         ] == ['amount', 'channel'] + names
  numeric = {f.name: f for f in config.numeric}
  assert numeric['shop_events_7d'].scale == 'zscore'
  assert numeric['shop_events_7d'].impute == 'mean'
  assert numeric['shop_amount_mean_7d'].log1p
  assert numeric['shop_amount_max_1d'].scale == 'minmax'
  assert numeric['user_amount_sum_12h'].buckets == 4
  outputs = {f.name for f in config.transformed_features()}
  assert 'user_amount_sum_12h_bucket' in outputs


@pytest.mark.parametrize('key,value,expected', [
    ('aggregate', 'median', "windows[1].aggregate: 'median' is not allowed; "
     'choose one of count, sum, mean, min, max'),
    ('window', '7days', "windows[1].window: '7days' is not a duration; use "
     'a number of seconds or a number followed by one of s, m, h, d, w'),
    ('window', 0, 'windows[1].window: 0 is not a duration of at least one '
     'second'),
    ('entity', 'store', "windows[1].entity: 'store' is not a column of the "
     'data; columns are: shop, user, at, amount, channel, fraud'),
    ('entity', 'amount', "windows[1].entity: 'amount' has type float; an "
     'entity must be a single-valued column of type string or int'),
    ('timestamp', 'user', "windows[1].timestamp: 'user' has type int; the "
     'timestamp must be a single-valued column of type timestamp'),
    ('value', 'channel', "windows[1].value: 'channel' has type string; a "
     'value must be a single-valued column of type int or float'),
    ('value', 'fraud', "windows[1].value: 'fraud' is the label"),
    ('name', 'amount', "windows[1].name: 'amount' is already a column"),
    ('name', 'shop_events_7d', "windows[1].name: duplicate window "
     "'shop_events_7d'"),
    ('scale', 'log', "windows[1].scale: 'log' is not allowed; choose one of "
     'zscore, minmax, none'),
    ('colour', 'red', "windows[1]: unknown key 'colour'; allowed keys:"),
])
def test_config_errors_name_key_value_and_allowed(key, value, expected):
  msg = _error(lambda c: c['windows'][1].update({key: value}))
  assert expected in msg, msg


def test_config_error_value_missing_for_mean():
  msg = _error(lambda c: c['windows'][1].pop('value'))
  assert msg.startswith("windows[1]: missing required key 'value'"), msg
  assert 'count is the only one without a value' in msg


def test_config_error_value_given_for_count():
  msg = _error(lambda c: c['windows'][0].update(value='amount'))
  assert 'windows[0].value: not used by aggregate count' in msg


def test_config_error_list_entity_and_history_column():

  def add_list(c):
    c['columns'].append({'name': 'tags', 'type': 'string', 'list': True})
    c['windows'][0]['entity'] = 'tags'

  assert "'tags' has type string (list)" in _error(add_list)

  def add_history(c):
    c['columns'].append({'name': 'history', 'type': 'string'})

  assert "a column is named 'history'" in _error(add_history)


def test_config_error_window_name_collides_with_an_output():
  msg = _error(lambda c: c['windows'][3].update(name='x', buckets=3) or c[
      'windows'].append(dict(c['windows'][0], name='x_bucket')))
  assert "transformed feature name 'x_bucket' collides" in msg


def test_windows_are_optional_and_leave_other_configs_alone():
  config = load_config(str(ROOT / 'schemas' / 'census.yaml'))
  assert config.windows == () and config.derived_columns == []
  assert config.column_names == [c.name for c in config.columns]


# ----------------------------------------------------------------------- core


def _naive(w, times, values, entities):
  out = []
  for i, t in enumerate(times):
    if np.isnan(t) or entities[i] < 0:
      out.append(np.nan)
      continue
    rows = [
        j for j in range(len(times))
        if entities[j] == entities[i] and not np.isnan(times[j]) and t -
        w.seconds < times[j] <= t
    ]
    vals = [values[j] for j in rows if not np.isnan(values[j])]
    out.append({
        'count': len(rows),
        'sum': math.fsum(vals),
        'mean': math.fsum(vals) / len(vals) if vals else np.nan,
        'min': min(vals) if vals else np.nan,
        'max': max(vals) if vals else np.nan
    }[w.aggregate])
  return np.array(out, dtype=np.float64)


def test_aggregate_matches_a_brute_force_definition():
  rng = np.random.default_rng(0)
  for _ in range(150):
    n = int(rng.integers(0, 40))
    times = rng.integers(0, 20, n).astype(np.float64)
    times[rng.random(n) < 0.1] = np.nan
    values = np.round(rng.normal(0, 10, n), 2)
    values[rng.random(n) < 0.2] = np.nan
    entities = rng.integers(-1, 4, n)
    for agg in ('count', 'sum', 'mean', 'min', 'max'):
      w = WindowFeature('x', 'e', 't', int(rng.integers(1, 8)), agg,
                        None if agg == 'count' else 'v')
      np.testing.assert_allclose(
          core_windows.aggregate(w, times, values, entities),
          _naive(w, times, values, entities),
          rtol=1e-9,
          atol=1e-9)


def test_window_value_of_one_row_and_its_history():
  mean = WindowFeature('m', 'e', 't', 10, 'mean', 'v')
  # (0, 10]: the event at 0 is out, the missing value is skipped.
  assert core_windows.window_value(mean, [0, 1, 5, None],
                                   [100.0, 2.0, None, 7.0], 10, 4.0) == 3.0
  assert core_windows.window_value(mean, [], [], 10, 4.0) == 4.0  # alone
  assert core_windows.window_value(mean, [], [], 10, None) is None
  assert core_windows.window_value(mean, [1], [1.0], None, 4.0) is None
  count = WindowFeature('c', 'e', 't', 10, 'count')
  assert core_windows.window_value(count, [0, 1, 10, 11], None, 10) == 3.0
  total = WindowFeature('s', 'e', 't', 10, 'sum', 'v')
  assert core_windows.window_value(total, [5], [None], 10, None) == 0.0


def test_split_positions_ignore_window_columns():
  config = load_config(EVENTS_CONFIG)
  batch, _, _ = cleanse.RowParser(config).parse_chunk(
      RawChunk('x.csv', 2, 'csv', [r.encode() for r in event_rows(50, seed=1)]))
  skip = [c.name for c in config.derived_columns]
  filled = windows.fill_windows(batch, config.windows)
  assert not np.array_equal(
      split.row_positions(batch, 5), split.row_positions(filled, 5))
  assert np.array_equal(
      split.row_positions(batch, 5, skip), split.row_positions(filled, 5, skip))


# ----------------------------------------------------------------------- Beam

_SMALL = """
name: small
input: {format: csv}
columns:
  - {name: e, type: string}
  - {name: t, type: timestamp}
  - {name: v, type: float}
  - {name: y, type: string}
label: {column: y, classes: ["a", "b"], positive: "b"}
features: {v: {}}
windows:
  - {name: n10, entity: e, timestamp: t, window: 10s, aggregate: count}
  - {name: sum10, entity: e, timestamp: t, window: 10, aggregate: sum, value: v}
  - {name: mean10, entity: e, timestamp: t, window: 10s, aggregate: mean,
     value: v}
  - {name: min10, entity: e, timestamp: t, window: 10s, aggregate: min,
     value: v}
  - {name: max10, entity: e, timestamp: t, window: 10s, aggregate: max,
     value: v}
split: {ratios: {train: 0.5, eval: 0.5}}
"""
# (e, t, v) -> (n10, sum10, mean10, min10, max10), each window (t - 10, t].
_EXPECTED = [
    (('a', 0, 1.0), (1, 1.0, 1.0, 1.0, 1.0)),
    # Two rows at t=5 (a tie): each sees the other; a missing value is
    # counted by count and skipped by the rest.
    (('a', 5, 3.0), (3, 4.0, 2.0, 1.0, 3.0)),
    (('a', 5, None), (3, 4.0, 2.0, 1.0, 3.0)),
    # t=10: the row at 0 is exactly 10 s older, so out of the window.
    (('a', 10, 5.0), (3, 8.0, 4.0, 3.0, 5.0)),
    (('a', 15, None), (2, 5.0, 5.0, 5.0, 5.0)),
    (('b', 5, 2.0), (1, 2.0, 2.0, 2.0, 2.0)),
    # Only missing values in the window: sum 0, the rest missing.
    (('c', 3, None), (1, 0.0, None, None, None)),
    # No entity or no timestamp: every window missing.
    ((None, 5, 7.0), (None,) * 5),
    (('a', None, 9.0), (None,) * 5),
]


def _row_batch(config, rows):
  schema = features.arrow_schema(config)
  columns = list(zip(*rows))
  derived = len(config.derived_columns)
  arrays = [
      pa.array([None if x is None else [x]
                for x in values], type=field.type)
      for values, field in zip(columns + [[None] * len(rows)] * derived, schema)
  ]
  return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _as_rows(batch):
  return [
      tuple(_json(v[0]) if v else None
            for v in row.values())
      for row in batch.to_pylist()
  ]


def test_beam_transform_gives_exact_aggregates():
  config = parse_config(_SMALL)
  rows = [(e, t, v, 'a') for (e, t, v), _ in _EXPECTED]
  expected = sorted(((e, t, v, 'a') + tuple(None if x is None else float(x)
                                            for x in want)
                     for (e, t, v), want in _EXPECTED),
                    key=repr)
  # Two batches, the entity 'a' spread over both; several key buckets.
  batches = [_row_batch(config, rows[:3]), _row_batch(config, rows[3:])]

  def check(out):
    got = sorted((r for b in out for r in _as_rows(b)), key=repr)
    assert got == expected, got

  with test_pipeline.TestPipeline() as p:
    out = (
        p | beam.Create(batches, reshuffle=False)
        | windows.AddWindowFeatures(config, key_buckets=3))
    assert_that(out, check)


def test_beam_and_serving_compute_the_same_values():
  config = load_config(EVENTS_CONFIG)
  lines = event_rows(400, seed=7)
  parser = cleanse.RowParser(config)
  batches = [
      parser.parse_chunk(
          RawChunk('e.csv', 1 + i, 'csv', [r.encode()
                                           for r in lines[i:i + 90]]))[0]
      for i in range(0, 400, 90)
  ]
  raw = [r for b in batches for r in b.to_pylist()]
  schema = request_checks.RowSchema(config)
  inputs = [n for n in schema.names if n not in schema.derived]

  def serve(row):
    """Row -> instance + the history of each of its entities -> RowSchema."""

    def value(r, n):
      return r[n][0] if r[n] else None

    instance = {n: _json(value(row, n)) for n in inputs}
    others = [r for r in raw if r is not row]
    history = [{
        n: _json(value(r, n)) for n in ('shop', 'user', 'at', 'amount')
    } for r in others]
    instance['history'] = history
    return schema.row(instance, 'instances[0]')

  def check(out):
    got = [r for b in out for r in b.to_pylist()]
    assert len(got) == len(raw)

    # The same rows come out, derived columns filled.
    def key(r):
      return (r['shop'], r['user'], r['at'], r['amount'], r['channel'],
              r['fraud'])

    by_key = {}
    for r in got:
      by_key.setdefault(repr(key(r)), []).append(r)
    checked = 0
    for row in raw[::7]:
      served = serve(row)
      beam_row = by_key[repr(key(row))][0]
      for w in config.windows:
        b = beam_row[w.name][0] if beam_row[w.name] else None
        s = served[w.name]
        if w.aggregate in ('sum', 'mean') and b is not None:
          # Prefix sums over other row sets: equal to float rounding.
          s = pytest.approx(s, rel=1e-6)
        assert s == b, (w.name, row, served[w.name], b)
      checked += 1
    assert checked >= 50

  with test_pipeline.TestPipeline() as p:
    out = (
        p | beam.Create(batches, reshuffle=False)
        | windows.AddWindowFeatures(config, key_buckets=5))
    assert_that(out, check)


def _json(value):
  return value.decode('utf-8') if isinstance(value, bytes) else value


# -------------------------------------------------------------------- serving


@pytest.fixture(scope='module')
def small_schema():
  return request_checks.RowSchema(parse_config(_SMALL))


def test_serving_computes_windows_from_history(small_schema):
  row = small_schema.row(
      {
          'e':
              'a',
          't':
              10,
          'v':
              5.0,
          'history': [
              {
                  't': 0,
                  'v': 1.0
              },
              {
                  't': '1970-01-01T00:00:05Z',
                  'v': 3
              },
              {
                  'e': 'a',
                  't': 5,
                  'v': None
              },
              {
                  'e': 'zz',
                  't': 9,
                  'v': 100.0
              },  # another entity: out
              {
                  't': 15,
                  'v': 50.0
              }
          ]
      },
      'instances[0]')  # later: out
  assert [row[n] for n in ('n10', 'sum10', 'mean10', 'min10', 'max10')
         ] == [3.0, 8.0, 4.0, 3.0, 5.0]


def test_serving_without_history_holds_the_instance_alone(small_schema):
  row = small_schema.row({'e': 'a', 't': 10, 'v': 5.0}, 'instances[0]')
  assert [row[n] for n in ('n10', 'sum10', 'mean10', 'min10', 'max10')
         ] == [1.0, 5.0, 5.0, 5.0, 5.0]
  # No entity: missing, imputed by the graph, as in training.
  row = small_schema.row({'e': None, 't': 10, 'v': 5.0}, 'instances[0]')
  assert row['n10'] is None and row['mean10'] is None


def test_serving_takes_a_window_value_sent_as_is(small_schema):
  row = small_schema.row(
      {
          'e': 'a',
          't': 10,
          'v': 5.0,
          'n10': 42,
          'mean10': None,
          'history': [{
              't': 9,
              'v': 1.0
          }]
      }, 'instances[0]')
  assert row['n10'] == 42.0 and row['mean10'] is None
  assert row['sum10'] == 6.0  # not sent: computed
  logged = small_schema.logged(
      {
          'e': 'a',
          't': 10,
          'v': 5.0,
          'n10': 42,
          'history': [{
              't': 9,
              'v': 1.0
          }]
      }, row)
  assert 'history' not in logged
  assert logged['n10'] == 42 and logged['sum10'] == 6.0


@pytest.mark.parametrize('history,expected', [
    ('yes', "instances[0]: history: expected a list of earlier events"),
    ([1], 'instances[0]: history[0]: expected an object'),
    ([{
        't': 1
    }], "instances[0]: history[0]: missing field 'v'"),
    ([{
        't': 1,
        'v': 1,
        'w': 2
    }], "instances[0]: history[0]: unknown field "
     "'w'; a history event has 'e', 't', 'v'"),
    ([{
        't': 1,
        'v': 'x'
    }], "instances[0]: history[0]: feature 'v': expected "
     'a number'),
    ([{
        't': 'soon',
        'v': 1
    }], "instances[0]: history[0]: feature 't': "
     "'soon' is not a timestamp"),
])
def test_malformed_history_is_a_400_naming_the_field(small_schema, history,
                                                     expected):
  with pytest.raises(request_checks.RequestError) as e:
    request_checks.parse_predict(
        {'instances': [{
            'e': 'a',
            't': 10,
            'v': 5.0,
            'history': history
        }]}, small_schema, 10)
  assert e.value.status == 400
  assert e.value.message.startswith(expected), e.value.message


def test_serving_request_formats_with_history(small_schema):
  rows = request_checks.parse_predict(
      {
          'inputs': {
              'e': ['a', 'b'],
              't': [10, 10],
              'v': [5.0, 1.0],
              'history': [[{
                  't': 9,
                  'v': 1.0
              }], None]
          }
      }, small_schema, 10)
  assert [r['sum10'] for r in rows.rows] == [6.0, 1.0]
  assert rows.received[0]['sum10'] == 6.0 and 'history' not in rows.received[0]
  with pytest.raises(request_checks.RequestError) as e:
    request_checks.parse_predict(
        {'inputs': {
            'e': ['a'],
            't': [10],
            'v': [5.0],
            'history': []
        }}, small_schema, 10)
  assert "inputs: 'history': expected a list with one list" in e.value.message
  rows = request_checks.parse_classify(
      {
          'context': {
              'history': [{
                  't': 9,
                  'v': 1.0
              }]
          },
          'examples': [{
              'e': 'a',
              't': 10,
              'v': 5.0
          }]
      }, small_schema, 10)
  assert rows.rows[0]['sum10'] == 6.0
  # A feature other than a window column is still required.
  with pytest.raises(request_checks.RequestError) as e:
    small_schema.row({'e': 'a', 'v': 5.0}, 'instances[0]')
  assert "missing feature 't'" in e.value.message


# --------------------------------------------------------- predict and skew


def test_predict_computes_windows_over_the_file(tmp_path):
  config = load_config(EVENTS_CONFIG)
  path = datagen.write_lines(
      str(tmp_path / 'e.csv'),
      [
          's1,1,1717200000,10,web,no',
          '# a comment',
          's1,2,2024-06-01T01:00:00Z,30,app,',  # label left out: fine
          's2,1,1717203600,5,app,no',
          'bad line',
          's1,1,1717200000,?,web,no',
          's1,1,1717203000,abc,web,no',  # unreadable: scored as an error, in no window
      ],
      header=EVENTS_HEADER)
  values = predict.file_window_values(config, path)
  assert sorted(values) == [2, 4, 5, 7]
  assert values[2]['shop_events_7d'] == 2.0  # itself and line 7 (a tie)
  assert values[4]['shop_events_7d'] == 3.0
  assert values[4]['shop_amount_mean_7d'] == 20.0
  assert values[5]['shop_amount_max_1d'] == 5.0
  assert values[7]['user_amount_sum_12h'] == 10.0  # line 2; its own missing
  extended = tf.train.Example.FromString(
      predict.with_window_values(tf.train.Example().SerializeToString(),
                                 values[4]))
  assert extended.features.feature['shop_amount_mean_7d'].float_list.value[
      0] == 20.0


def test_fill_windows_keeps_values_a_request_log_recorded():
  config = parse_config(_SMALL)
  batch = _row_batch(config, [('a', 0, 1.0, 'a'), ('a', 5, 3.0, 'a')])
  arrays = batch.columns
  index = batch.schema.get_field_index('n10')
  arrays[index] = pa.array([[7.0], None], type=arrays[index].type)
  batch = pa.RecordBatch.from_arrays(arrays, schema=batch.schema)
  filled = windows.fill_windows(batch, config.windows, only_missing=True)
  assert filled.column('n10').to_pylist() == [[7.0], [2.0]]
  assert filled.column('mean10').to_pylist() == [[1.0], [2.0]]


# ----------------------------------------------------------------- end to end


@pytest.fixture(scope='module')
def events_run(tmp_path_factory):
  """The events config preprocessed: (tmp dir, CSV lines, data path, schema
  path, output dir, manifest)."""
  tmp_path = tmp_path_factory.mktemp('events')
  lines = event_rows(500, seed=3)
  data = datagen.write_lines(
      str(tmp_path / 'events.csv'), lines, header=EVENTS_HEADER)
  # schema infer computes the windows too: the drafted TFDV schema has the
  # derived columns, and preprocess accepts it as the curated schema.
  schema_path = str(tmp_path / 'events_schema.pbtxt')
  schema = schema_cli.infer(EVENTS_CONFIG, data, schema_path, False, [])
  out = str(tmp_path / 'pp')
  manifest = preprocess.run([
      '--config', EVENTS_CONFIG, '--input', data, '--output-dir', out,
      '--num-shards', '1', '--write-raw', '--schema', schema_path,
      '--anomalies', 'warn'
  ])
  return tmp_path, lines, data, schema, out, manifest


def test_preprocess_with_windows_end_to_end(events_run):
  _, lines, data, schema, out, manifest = events_run
  config = load_config(EVENTS_CONFIG)
  assert [f.name for f in schema.feature
         ] == [c.name for c in config.raw_columns]
  rows = manifest['rows']
  assert rows['train'] + rows['eval'] + rows['quarantined'] == 500
  names = [w.name for w in config.windows]
  spec = tft.TFTransformOutput(out).transformed_feature_spec()
  for n in names:
    assert spec[n].dtype == tf.float32, n
  assert spec['user_amount_sum_12h_bucket'].dtype == tf.int64

  def examples(pattern):
    files = sorted(glob.glob(os.path.join(out, pattern)))
    return [
        tf.train.Example.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(files, compression_type='GZIP')
    ]

  # Raw rows: the derived values are the windows over the whole input.
  raw = examples('raw/*.tfrecord.gz')
  assert len(raw) == rows['train'] + rows['eval']
  parsed = cleanse.RowParser(config).parse_chunk(
      RawChunk(data, 2, 'csv', [l.encode() for l in lines]))[0]
  truth = windows.window_columns(parsed, config.windows)
  index = {}
  for i, r in enumerate(parsed.to_pylist()):
    index.setdefault(repr([r[c] for c in config.column_names]), i)
  matched = 0
  for ex in raw:
    f = ex.features.feature
    key = repr([_feature_values(f, c) for c in config.column_names])
    if key not in index:
      continue
    matched += 1
    for n in names:
      want = truth[n][index[key]]
      got = _feature_values(f, n)
      if np.isnan(want):
        assert got is None, (n, got)
      else:
        assert got == [pytest.approx(want, rel=1e-6)], (n, got, want)
  assert matched > 400
  counts = [
      v for e in raw
      for v in e.features.feature['shop_events_7d'].float_list.value
  ]
  assert min(counts) >= 1 and max(counts) > 5
  # Transformed: every window scaled and imputed, so present and finite.
  train = examples('data/train-*')
  assert train
  means = []
  for ex in train:
    f = ex.features.feature
    for n in names:
      value = f[n].float_list.value[0]
      assert math.isfinite(value), n
    means.append(f['shop_events_7d'].float_list.value[0])
  assert abs(np.mean(means)) < 0.2  # z-score on train
  maxima = [
      ex.features.feature['shop_amount_max_1d'].float_list.value[0]
      for ex in train
  ]
  assert min(maxima) >= 0 and max(maxima) <= 1  # minmax on train


def test_windows_train_and_serve_from_history(events_run):
  """Trained on Beam's window values; trainer.predict (windows over the
  file) and the REST server (windows over each instance's "history") give
  the same predictions for the same rows."""
  tmp_path, lines, data, _, out, _ = events_run
  model_dir = str(tmp_path / 'model')
  doc = task.run([
      '--preprocess-dir', out, '--model-dir', model_dir, '--epochs', '3',
      '--batch-size', '64', '--verbose', '0'
  ])
  assert doc['eval']['rows'] > 50
  scored = str(tmp_path / 'scored.jsonl')
  assert predict.main(
      ['--model-dir', model_dir, '--input', data, '--output', scored]) == 0
  with open(scored, encoding='utf-8') as f:
    by_line = {r['line']: r for r in map(json.loads, f)}
  # Rows with every window input present; the data's line 1 is the header.
  parsed = [dict(zip(EVENTS_HEADER.split(','), l.split(','))) for l in lines]
  complete = [
      i for i, r in enumerate(parsed)
      if '?' not in (r['shop'], r['user'], r['at'], r['amount'])
  ]

  def event(r):
    typed = {'shop': str, 'user': int, 'at': str, 'amount': float}
    return {k: None if r[k] == '?' else t(r[k]) for k, t in typed.items()}

  instances = []
  for i in complete[:12]:
    r = parsed[i]
    instance = dict(event(r), channel=r['channel'])
    instance['history'] = [
        event(o)
        for j, o in enumerate(parsed)
        if j != i and '?' not in (o['at'],) and
        (o['shop'] == r['shop'] or o['user'] == r['user'])
    ]
    instances.append(instance)
  server = Server(model_dir, str(tmp_path / 'server'), '--max-body-bytes',
                  str(8 * 1024 * 1024))
  try:
    status, body = server.post('predict', {'instances': instances})
    alone = server.post(
        'predict', {
            'instances': [{
                k: v for k, v in x.items() if k != 'history'
            } for x in instances]
        })
  finally:
    server.stop()
  assert status == 200, body
  served = [p['probabilities'][0] for p in body['predictions']]
  from_file = [by_line[i + 2]['probability'] for i in complete[:12]]
  assert served == pytest.approx(from_file, abs=1e-5)
  # The history matters: without it each window holds the instance alone.
  assert alone[0] == 200
  assert [p['probabilities'][0] for p in alone[1]['predictions']] != (
      pytest.approx(from_file, abs=1e-5))
