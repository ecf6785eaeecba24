"""Every column type and head in the config, and the value parsers behind them.

Uses tests/data/mixed.yaml (one column of each type) and variants of its
label section for the three heads.
"""

import datetime

import pytest
import yaml

from core import values
from core.config import load_config
from core.config import MULTICLASS
from core.config import parse_config
from core.config import REGRESSION
from core.errors import ConfigError
from tests.conftest import ROOT

MIXED_CONFIG = str(ROOT / 'tests' / 'data' / 'mixed.yaml')


def _mixed_dict():
  with open(MIXED_CONFIG) as f:
    return yaml.safe_load(f)


def _parse(mutate):
  raw = _mixed_dict()
  mutate(raw)
  return parse_config(yaml.safe_dump(raw))


def _error(mutate) -> str:
  with pytest.raises(ConfigError) as e:
    _parse(mutate)
  return str(e.value)


def test_mixed_config_roles_of_every_type():
  config = load_config(MIXED_CONFIG)
  roles = {f.name: f for f in config.transformed_features()}
  assert roles['member'].kind == 'categorical' and roles['member'].deep
  assert not roles['member'].multivalent
  for part in ('hour', 'day_of_week', 'month'):
    assert roles[f'signup_{part}'].kind == 'categorical'
    assert roles[f'signup_{part}_sin'].kind == 'numeric'
    assert roles[f'signup_{part}_cos'].kind == 'numeric'
  assert roles['tags'].multivalent and roles['review'].multivalent
  assert roles['member_x_signup_day_of_week'].wide
  carried = {c.name: c.raw_type for c in config.raw_columns}
  assert carried == {
      'amount': 'float',
      'visits': 'int',
      'member': 'int',
      'signup': 'int',
      'shop': 'string',
      'tags': 'string',
      'review': 'string',
      'target': 'string'
  }
  assert config.column('tags').is_list and config.column(
      'tags').separator == '|'


def test_multiclass_and_regression_labels():

  def multiclass(raw):
    raw['label'] = {
        'column': 'target',
        'task': 'multiclass',
        'classes': ['low', 'mid', 'high']
    }

  config = _parse(multiclass)
  assert config.label.task == MULTICLASS
  assert config.label.classes == ('low', 'mid', 'high')
  assert config.label.positive is None and config.split.stratify

  def regression(raw):
    raw['columns'][-1]['type'] = 'float'
    raw['label'] = {
        'column': 'target',
        'task': 'regression',
        'log_target': True
    }
    del raw['split']['stratify']

  config = _parse(regression)
  assert config.label.task == REGRESSION and config.label.log_target
  assert config.label.classes == () and not config.split.stratify


@pytest.mark.parametrize('mutate, expected', [
    (lambda r: r['label'].update(task='multiclass', classes=['a', 'b']),
     'label.classes: a multiclass task needs at least three classes'),
    (lambda r: r['label'].update(task='regression'),
     "label.column: 'target' has type string; a regression label must be int "
     'or float'),
    (lambda r: r['label'].update(task='ordinal'),
     "label.task: 'ordinal' is not allowed; choose one of binary, multiclass, "
     'regression'),
    (lambda r: r['label'].update(
        task='multiclass', classes=['a', 'b', 'c'], positive='a'),
     'label.positive: only for task: binary'),
    (lambda r: r['label'].update(classes=['low', 'low']),
     "label.classes: duplicate class in ['low', 'low']"),
    (lambda r: r['label'].update(log_target=True),
     'label.log_target: only for task: regression'),
    (lambda r: r['columns'][0].update(list=True),
     "columns[0].list: list-valued columns must have type string, and "
     "'amount' has type float"),
    (lambda r: r['columns'][4].update(separator=';'),
     'columns[4].separator: only for list: true columns'),
    (lambda r: r['columns'][5].update(separator='||'),
     "columns[5].separator: expected one character, got '||'"),
    (lambda r: r['columns'][2].update(values=['yes']),
     "columns[2].values: allowed values apply to string columns, and 'member' "
     'has type bool'),
    (lambda r: r['features'].update(signup={'parts': ['minute']}),
     "features.signup.parts: 'minute' is not allowed; choose one of hour, "
     'day_of_week, month'),
    (lambda r: r['features'].update(member={'buckets': 2}),
     "features.member: unknown key 'buckets'"),
    (lambda r: r['features'].update(review={
        'vocabulary': True,
        'hash_buckets': 10
    }), 'features.review: vocabulary: true excludes hash_buckets'),
    (lambda r: r['crosses'].append({
        'features': ['tags', 'shop'],
        'hash_buckets': 10
    }), "crosses[1].features: 'tags' cannot be crossed"),
    (lambda r: r['features'].update(signup={'parts': ['hour']}) or r.update(
        crosses=[{
            'features': ['signup_month', 'shop'],
            'hash_buckets': 10
        }]), "crosses[0].features: 'signup_month' cannot be crossed; crossable "
     'features are single-valued categorical features, numeric buckets, '
     'booleans and timestamp parts: amount_bucket, member, shop, signup_hour'),
])
def test_errors_name_the_key_the_value_and_what_is_allowed(mutate, expected):
  assert expected in _error(mutate)


def test_regression_cannot_be_stratified():

  def regression(raw):
    raw['columns'][-1]['type'] = 'float'
    raw['label'] = {'column': 'target', 'task': 'regression'}
    raw['split']['stratify'] = True

  assert 'split.stratify: stratification needs a classification label' in (
      _error(regression))


def test_output_name_collisions_are_reported():

  def collide(raw):
    raw['columns'].insert(0, {'name': 'signup_hour', 'type': 'float'})
    raw['features']['signup_hour'] = {}

  assert "transformed feature name 'signup_hour' collides" in _error(collide)


@pytest.mark.parametrize('raw, expected', [
    (True, 1),
    (False, 0),
    (1, 1),
    (0, 0),
    ('true', 1),
    ('FALSE', 0),
    (' yes ', 1),
    ('No', 0),
    ('1', 1),
    ('0', 0),
    (b't', 1),
])
def test_parse_bool(raw, expected):
  assert values.parse_bool(raw) == expected


@pytest.mark.parametrize('raw', ['maybe', 2, 0.5, '', 'truthy'])
def test_parse_bool_rejects(raw):
  with pytest.raises(ValueError, match='not a boolean'):
    values.parse_bool(raw)


_T = int(
    datetime.datetime(2024, 5, 1, 13, 45, 10,
                      tzinfo=datetime.timezone.utc).timestamp())


@pytest.mark.parametrize('raw, expected', [
    ('2024-05-01T13:45:10Z', _T),
    ('2024-05-01 13:45:10', _T),
    ('2024-05-01T15:45:10+02:00', _T),
    ('2024-05-01T13:45:10.999Z', _T),
    ('2024-05-01', _T - 13 * 3600 - 45 * 60 - 10),
    (str(_T), _T),
    (_T, _T),
    (float(_T) + 0.5, _T),
    ('1969-12-31T23:59:59Z', -1),
])
def test_parse_timestamp(raw, expected):
  assert values.parse_timestamp(raw) == expected


@pytest.mark.parametrize(
    'raw', ['yesterday', '2024-13-01', '1e20', True, 'nan', '2024-05-01T25:00'])
def test_parse_timestamp_rejects(raw):
  with pytest.raises(ValueError):
    values.parse_timestamp(raw)


def test_split_list():
  assert values.split_list(' a | b ||c| ', '|') == ['a', 'b', 'c']
  assert values.split_list('', '|') == []
