"""Reading serving data: RowParser's serving mode and format detection.

Plain Python, no Beam: these run in a fraction of a second.
"""

import gzip
import json

import pytest

from core.config import load_config
from core.errors import UserError
from pipeline import cleanse
from pipeline import skew
from pipeline.sources import RawChunk
from tests.conftest import CENSUS_CONFIG
from tests.conftest import TOY_CONFIG

ADULT_ROW = (b'25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, '
             b'Own-child, Black, Male, 0, 0, 40, United-States')


@pytest.fixture(scope='module')
def census():
  return load_config(CENSUS_CONFIG)


def _parse(config, records, fmt='csv', **kwargs):
  return cleanse.RowParser(config, **kwargs).parse_chunk(
      RawChunk('serving', 1, fmt, records))


def _column(batch, name):
  return [v[0] if v else None for v in batch.column(name).to_pylist()]


def test_training_mode_still_requires_the_label(census):
  batch, quarantine, counts = _parse(census, [ADULT_ROW + b', ?', ADULT_ROW])
  assert batch is None
  assert [q['reason'] for q in quarantine
         ] == [cleanse.MISSING_LABEL, cleanse.WRONG_ARITY]
  assert counts[cleanse.ROWS_QUARANTINED] == 2


def test_serving_mode_accepts_a_missing_or_left_out_label(census):
  records = [ADULT_ROW + b', ?', ADULT_ROW, ADULT_ROW + b', >50K.']
  batch, quarantine, counts = _parse(census, records, label_optional=True)
  assert quarantine == []
  assert counts[cleanse.ROWS_KEPT] == 3
  assert _column(batch, 'income_bracket') == [None, None, b'>50K']
  # Left out, the label does not shift the other columns.
  assert _column(batch, 'native_country') == [b'United-States'] * 3
  assert _column(batch, 'age') == [25, 25, 25]


def test_serving_mode_keeps_every_other_rule(census):
  records = [
      ADULT_ROW.replace(b'25,', b'old,'), b'1, 2, 3', ADULT_ROW + b', maybe'
  ]
  batch, quarantine, _ = _parse(census, records, label_optional=True)
  assert batch is None
  assert [q['reason'] for q in quarantine] == [
      cleanse.NOT_A_NUMBER, cleanse.WRONG_ARITY, cleanse.UNKNOWN_LABEL
  ]
  assert 'or 14 without the label income_bracket' in quarantine[1]['detail']


def test_serving_mode_header_may_leave_out_the_label():
  toy = load_config(TOY_CONFIG)
  header = b'height,visits,city,color,note'
  batch, quarantine, counts = _parse(
      toy, [header, b'170.5, 3, oslo, red, hi'], label_optional=True)
  assert quarantine == [] and counts[cleanse.HEADER_LINES] == 1
  assert _column(batch, 'outcome') == [None]
  _, quarantine, _ = _parse(toy, [header, b'170.5, 3, oslo, red, hi'])
  assert [q['reason'] for q in quarantine
         ] == [cleanse.HEADER_MISMATCH, cleanse.WRONG_ARITY]


def test_dict_records_without_label(census):
  record = {'age': 30, 'workclass': 'Private', 'sex': 'Female'}
  batch, quarantine, _ = _parse(
      census, [record], fmt='jsonl', label_optional=True)
  assert quarantine == []
  assert _column(batch, 'age') == [30]
  assert _column(batch, 'occupation') == [None]
  _, quarantine, _ = _parse(census, [record], fmt='jsonl')
  assert quarantine[0]['reason'] == cleanse.MISSING_LABEL


@pytest.mark.parametrize('name,expected', [
    ('requests.jsonl', 'jsonl'),
    ('requests.jsonl.3', 'jsonl'),
    ('requests.jsonl.3.gz', 'jsonl'),
    ('log.json', 'jsonl'),
    ('part-0.tfrecord.gz', 'tfrecord'),
    ('x.tfrecords', 'tfrecord'),
    ('adult.test', 'csv'),
    ('serving.csv.gz', 'csv'),
    ('t.parquet', 'parquet'),
])
def test_format_from_name(tmp_path, name, expected):
  path = tmp_path / name
  path.write_bytes(b'')  # the name decides; the content is not read
  assert skew.detect_format(str(path)) == expected


def test_format_from_content(tmp_path):
  (tmp_path / 'a').write_text('{"features": {"age": 3}}\n', encoding='utf-8')
  (tmp_path / 'b').write_text('25, Private, 1\n', encoding='utf-8')
  (tmp_path / 'c').write_bytes(b'\x1a\x00\x00\x00\x00\x00\x00\x00\x8f\x01')
  with gzip.open(tmp_path / 'd.gz', 'wt') as f:
    f.write(json.dumps({'features': {}}) + '\n')
  assert [skew.detect_format(str(tmp_path / n)) for n in 'abc'
         ] == ['jsonl', 'csv', 'tfrecord']
  assert skew.detect_format(str(tmp_path / 'd.gz')) == 'jsonl'


def test_request_log_lines(tmp_path, census):
  path = tmp_path / 'requests.log'
  lines = [
      {
          'time': 't',
          'model_version': '1',
          'features': {
              'age': 40
          },
          'prediction': {}
      },
      {
          'age': 50
      },  # plain JSON lines of raw features
      [1, 2],
      {
          'features': 'age=3'
      },
  ]
  path.write_text(
      '\n'.join(json.dumps(l) for l in lines) + '\n\n{oops\n', encoding='utf-8')
  data = skew.read_serving_data([str(path)], census)
  assert data.formats == {str(path): 'jsonl'}
  assert data.rows_used == 2
  assert data.rejected_by_reason() == {skew.MALFORMED_JSON: 3}
  assert [r['line'] for r in data.rejected] == [3, 4, 6]
  assert data.counts[cleanse.BLANK_LINES] == 1


def test_check_usable_messages(tmp_path, census):
  path = tmp_path / 'x.jsonl'
  path.write_text(
      json.dumps({'features': {
          'height': 3
      }}) + '\n', encoding='utf-8')
  data = skew.read_serving_data([str(path)], census)
  with pytest.raises(
      UserError, match='wrong columns: height not in the '
      "config 'census'"):
    skew.check_usable(data, census, str(path))
