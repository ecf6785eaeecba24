"""Dataset config: loads the shipped configs, and rejects bad ones by name."""

import pytest
import yaml

from core.config import load_config
from core.config import parse_config
from core.errors import ConfigError
from tests.conftest import CENSUS_CONFIG
from tests.conftest import TOY_CONFIG


def _census_dict():
  with open(CENSUS_CONFIG) as f:
    return yaml.safe_load(f)


def _error(mutate) -> str:
  raw = _census_dict()
  mutate(raw)
  with pytest.raises(ConfigError) as e:
    parse_config(yaml.safe_dump(raw))
  return str(e.value)


def test_census_config_loads():
  config = load_config(CENSUS_CONFIG)
  assert config.label.column == 'income_bracket'
  assert config.label.positive == '>50K'
  assert config.label.aliases['>50K.'] == '>50K'
  assert len(config.columns) == 15
  names = [f.name for f in config.transformed_features()]
  assert 'age_bucket' in names
  assert 'age_bucket_x_education_x_occupation' in names
  roles = {f.name: f for f in config.transformed_features()}
  assert roles['education_x_occupation'].wide
  assert not roles['education_x_occupation'].deep
  assert roles['age'].kind == 'numeric' and roles['age'].deep
  assert roles['workclass'].wide and roles['workclass'].deep


def test_toy_config_loads():
  config = load_config(TOY_CONFIG)
  assert config.csv.header
  # 'note' is a column of the data but not a feature: not carried.
  assert 'note' not in [c.name for c in config.raw_columns]
  assert [c.name for c in config.raw_columns
         ] == ['height', 'visits', 'city', 'color', 'outcome']


def test_config_hash_changes_with_text():
  a = load_config(CENSUS_CONFIG)
  with open(CENSUS_CONFIG) as f:
    b = parse_config(f.read() + '\n# comment\n')
  assert a.config_hash != b.config_hash


def test_unknown_top_level_key_is_named():
  msg = _error(lambda c: c.update(modle={}))
  assert "unknown key 'modle'" in msg


def test_unknown_feature_option_is_named():
  msg = _error(lambda c: c['features']['age'].update(bucketz=3))
  assert 'features.age' in msg and "'bucketz'" in msg


def test_unknown_transform_value_is_named():
  msg = _error(lambda c: c['features']['age'].update(scale='robust'))
  assert 'features.age.scale' in msg and "'robust'" in msg
  assert 'zscore' in msg  # says what is allowed


def test_feature_not_in_data_is_named():
  msg = _error(lambda c: c['features'].update(salary={}))
  assert 'features.salary' in msg and 'not a column of the data' in msg


def test_label_not_in_data_is_named():
  msg = _error(lambda c: c['label'].update(column='income'))
  assert 'label.column' in msg and "'income'" in msg


def test_positive_class_must_be_a_class():
  msg = _error(lambda c: c['label'].update(positive='rich'))
  assert 'label.positive' in msg


def test_cross_of_unknown_feature_is_named():
  msg = _error(lambda c: c['crosses'][0].update(features=['education', 'job']))
  assert 'crosses[0].features' in msg and "'job'" in msg


def test_cross_of_numeric_without_buckets_is_rejected():
  msg = _error(
      lambda c: c['crosses'][0].update(features=['education', 'fnlwgt']))
  assert "'fnlwgt' cannot be crossed" in msg


def test_split_ratios_must_add_up():
  msg = _error(lambda c: c['split'].update(ratios={'train': 0.8, 'eval': 0.3}))
  assert 'split.ratios' in msg and 'add up to 1' in msg


def test_unknown_column_type_is_named():
  msg = _error(lambda c: c['columns'][0].update(type='integer'))
  assert 'columns[0].type' in msg and "'integer'" in msg


def test_invalid_column_name_is_rejected():
  msg = _error(lambda c: c['columns'][0].update(name='capital-gain'))
  assert 'columns[0].name' in msg


def test_label_as_feature_is_rejected():
  msg = _error(lambda c: c['features'].update(income_bracket={}))
  assert 'features.income_bracket' in msg


def test_not_yaml_is_a_config_error():
  with pytest.raises(ConfigError, match='not valid YAML'):
    parse_config('a: [1, 2')


def test_missing_file_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match='cannot read config'):
    load_config(str(tmp_path / 'nope.yaml'))


def test_yaml_syntax_error_is_one_line_naming_where():
  with pytest.raises(ConfigError) as e:
    parse_config('name: x\ninput: [a, b\n  c: d\n', 'data/new.yaml')
  msg = str(e.value)
  assert '\n' not in msg
  assert msg.startswith('data/new.yaml: not valid YAML: ')
  assert 'line 3, column 4' in msg and 'line 2, column 8' in msg
  with pytest.raises(ConfigError) as e:
    parse_config('a: "unterminated\n', 'x.yaml')
  assert '\n' not in str(e.value) and 'line ' in str(e.value)


def test_max_missing_is_a_fraction_per_column():
  config = load_config(CENSUS_CONFIG)
  shares = {c.name: c.max_missing for c in config.columns}
  assert shares['age'] == 0.01 and shares['occupation'] == 0.1
  assert shares['income_bracket'] == 0.0
  assert load_config(TOY_CONFIG).columns[0].max_missing is None
  for bad in (1.5, -0.1, 'some', True):
    msg = _error(lambda c, bad=bad: c['columns'][0].update(max_missing=bad))
    assert 'columns[0].max_missing' in msg and 'fraction' in msg, msg


def test_settings_beyond_their_type_are_config_errors():
  """Numbers no setting means (beyond int32, windows longer than any two
  timestamps apart) are named at load, not an overflow in the job."""
  msg = _error(lambda c: c['split'].update(seed=2**64))
  assert 'split.seed' in msg and '2147483647' in msg
  msg = _error(lambda c: c['input']['csv'].update(max_line_bytes=10**30))
  assert 'input.csv.max_line_bytes' in msg
  msg = _error(lambda c: c['features']['age'].update(buckets=10**400))
  assert 'features.age.buckets' in msg and 'digits' in msg and len(msg) < 300
  raw = _census_dict()
  raw['columns'].append({'name': 'at', 'type': 'timestamp'})
  for window, fragment in (('9' * 5000 + 'd',
                            'not a duration'), ('99999999999d', 'longer than'),
                           (10**30, 'longer than'), ('٣d', 'not a duration')):
    raw['windows'] = [{
        'name': 'w',
        'entity': 'workclass',
        'timestamp': 'at',
        'window': window,
        'aggregate': 'count'
    }]
    with pytest.raises(ConfigError) as e:
      parse_config(yaml.safe_dump(raw))
    assert 'windows[0].window' in str(e.value) and fragment in str(e.value)
    assert len(str(e.value)) < 300
