"""Cleanse: every kind of bad row goes to the quarantine with a reason."""

import dataclasses
import json

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline import cleanse
from pipeline.config import load_config
from pipeline.sources import RawChunk
from tests.conftest import CENSUS_CONFIG, TOY_CONFIG

GOOD = (b'39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, '
        b'Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K')


@pytest.fixture(scope='module')
def census():
  return load_config(CENSUS_CONFIG)


@pytest.fixture(scope='module')
def parser(census):
  return cleanse.RowParser(census)


def _parse(parser, lines, first_line=1, fmt='csv'):
  return parser.parse_chunk(RawChunk('in.csv', first_line, fmt, list(lines)))


def _one_reason(parser, line):
  batch, quarantine, counts = _parse(parser, [line])
  assert batch is None
  assert len(quarantine) == 1, quarantine
  assert counts[cleanse.ROWS_QUARANTINED] == 1
  return quarantine[0]


def test_good_row_is_typed(parser):
  batch, quarantine, counts = _parse(parser, [GOOD])
  assert quarantine == []
  assert counts[cleanse.ROWS_KEPT] == 1
  row = batch.to_pylist()[0]
  assert row['age'] == [39]
  assert row['workclass'] == [b'State-gov']
  assert row['capital_gain'] == [2174]
  assert row['income_bracket'] == [b'<=50K']
  assert batch.schema.field('age').type == pa.large_list(pa.int64())


def test_question_mark_is_missing_not_an_error(parser):
  line = GOOD.replace(b'State-gov', b'?').replace(b' 40,', b' ?,')
  batch, quarantine, _ = _parse(parser, [line])
  assert quarantine == []
  row = batch.to_pylist()[0]
  assert row['workclass'] is None
  assert row['hours_per_week'] is None
  # Missing values are nulls, not empty lists: TFDV counts them as missing.
  assert batch.column('workclass').null_count == 1


def test_label_alias_maps_to_class(parser):
  batch, _, _ = _parse(parser, [GOOD.replace(b'<=50K', b'>50K.')])
  assert batch.to_pylist()[0]['income_bracket'] == [b'>50K']


def test_wrong_arity(parser):
  q = _one_reason(parser, b'39, State-gov, 77516')
  assert q['reason'] == cleanse.WRONG_ARITY
  assert 'expected 15 fields, got 3' in q['detail']
  assert q['raw'] == '39, State-gov, 77516'
  assert q['source'] == 'in.csv' and q['line'] == 1


def test_non_numeric_number(parser):
  q = _one_reason(parser, GOOD.replace(b'39,', b'thirty,', 1))
  assert q['reason'] == cleanse.NOT_A_NUMBER
  assert q['detail'].startswith('age:')


def test_fractional_integer(parser):
  q = _one_reason(parser, GOOD.replace(b'39,', b'39.5,', 1))
  assert q['reason'] == cleanse.NOT_AN_INTEGER


def test_integral_float_is_accepted_for_int(parser):
  batch, quarantine, _ = _parse(parser, [GOOD.replace(b'39,', b'39.0,', 1)])
  assert quarantine == [] and batch.to_pylist()[0]['age'] == [39]


def test_non_finite_number(parser):
  q = _one_reason(parser, GOOD.replace(b'39,', b'inf,', 1))
  assert q['reason'] == cleanse.NON_FINITE


def test_value_not_allowed(parser):
  q = _one_reason(parser, GOOD.replace(b'Male', b'Mail'))
  assert q['reason'] == cleanse.NOT_ALLOWED
  assert 'sex' in q['detail']


def test_unknown_and_missing_label(parser):
  q = _one_reason(parser, GOOD.replace(b'<=50K', b'rich'))
  assert q['reason'] == cleanse.UNKNOWN_LABEL
  q = _one_reason(parser, GOOD.replace(b'<=50K', b'?'))
  assert q['reason'] == cleanse.MISSING_LABEL


def test_non_utf8_bytes(parser):
  q = _one_reason(parser, GOOD.replace(b'State-gov', b'St\xffte-gov'))
  assert q['reason'] == cleanse.INVALID_ENCODING
  # The raw text is kept, with the bad byte escaped rather than lost.
  assert '\\xff' in q['raw']


def test_one_megabyte_line(parser):
  line = b'x' * (1 << 20)
  q = _one_reason(parser, line)
  assert q['reason'] == cleanse.LINE_TOO_LONG
  assert len(q['raw']) == 1 << 20


def test_malformed_quoting(parser):
  q = _one_reason(parser, GOOD.replace(b'State-gov', b'"State-gov'))
  assert q['reason'] == cleanse.MALFORMED_CSV


def test_quoted_field_with_delimiter():
  toy = load_config(TOY_CONFIG)
  p = cleanse.RowParser(toy)
  batch, quarantine, counts = _parse(
      p, [b'height,visits,city,color,note,outcome',
          b'170.5, 3, "paris, fr", red, "a, b", yes'])
  assert quarantine == [] and counts[cleanse.HEADER_LINES] == 1
  assert batch.to_pylist()[0]['city'] == [b'paris, fr']


def test_blank_and_comment_lines_are_counted_not_quarantined(census):
  p = cleanse.RowParser(census)
  batch, quarantine, counts = _parse(
      p, [b'|1x3 Cross validator', GOOD, b'', b'   ', GOOD])
  assert quarantine == []
  assert counts[cleanse.COMMENT_LINES] == 1
  assert counts[cleanse.BLANK_LINES] == 2
  assert counts[cleanse.ROWS_KEPT] == 2
  assert counts[cleanse.LINES] == 5


def test_junk_header_without_comment_prefix_is_quarantined(census):
  # The same junk line when the config does not declare a comment prefix.
  no_comment = dataclasses.replace(
      census, csv=dataclasses.replace(census.csv, comment_prefix=None))
  p = cleanse.RowParser(no_comment)
  q = _one_reason(p, b'|1x3 Cross validator')
  assert q['reason'] == cleanse.WRONG_ARITY


def test_header_mismatch_is_quarantined():
  p = cleanse.RowParser(load_config(TOY_CONFIG))
  _, quarantine, _ = _parse(p, [b'a,b,c,d,e,f'])
  assert quarantine[0]['reason'] == cleanse.HEADER_MISMATCH


def test_line_numbers_follow_chunk_offset(parser):
  _, quarantine, _ = _parse(parser, [GOOD, b'bad', GOOD, b'bad'],
                            first_line=101)
  assert [q['line'] for q in quarantine] == [102, 104]


def test_dict_records_from_parquet_or_tfrecord(census):
  p = cleanse.RowParser(census)
  row = dict(zip(census.column_names, [
      39, 'State-gov', 77516, 'Bachelors', 13, 'Never-married',
      'Adm-clerical', 'Not-in-family', 'White', 'Male', 2174, 0, 40,
      'United-States', '>50K.']))
  missing = dict(row, workclass=None, age=float('nan'))
  multi = {k: [v] for k, v in row.items()}
  multi['age'] = [1, 2]
  bad_type = dict(row, age=True)
  batch, quarantine, counts = p.parse_chunk(
      RawChunk('in.parquet', 1, 'parquet', [row, missing, multi, bad_type]))
  assert counts[cleanse.ROWS_KEPT] == 2
  rows = batch.to_pylist()
  assert rows[0]['income_bracket'] == [b'>50K']
  assert rows[1]['workclass'] is None and rows[1]['age'] is None
  assert [q['reason'] for q in quarantine] == [
      cleanse.MULTIPLE_VALUES, cleanse.WRONG_TYPE]
  assert json.loads(quarantine[0]['raw'])['age'] == [1, 2]


def test_cleanse_rows_ptransform(census):
  chunk_a = RawChunk('a.csv', 1, 'csv', [GOOD, b'', b'oops'])
  chunk_b = RawChunk('b.csv', 1, 'csv', [GOOD.replace(b'39,', b'x,', 1), GOOD])
  with TestPipeline() as p:
    result = (p | beam.Create([chunk_a, chunk_b])
              | cleanse.CleanseRows(census))
    rows = result.rows | 'Rows' >> beam.Map(lambda b: b.num_rows)
    reasons = result.quarantine | 'Reasons' >> beam.Map(
        lambda q: (q['source'], q['line'], q['reason']))
    totals = result.counts | beam.CombineGlobally(cleanse.SumCounts())
    assert_that(rows, equal_to([1, 1]), label='CheckRows')
    assert_that(reasons, equal_to([('a.csv', 3, cleanse.WRONG_ARITY),
                                   ('b.csv', 1, cleanse.NOT_A_NUMBER)]),
                label='CheckQuarantine')
    assert_that(totals, equal_to([{
        cleanse.LINES: 5, cleanse.BLANK_LINES: 1, cleanse.ROWS_KEPT: 2,
        cleanse.ROWS_QUARANTINED: 2,
        cleanse.QUARANTINED_PREFIX + cleanse.WRONG_ARITY: 1,
        cleanse.QUARANTINED_PREFIX + cleanse.NOT_A_NUMBER: 1,
    }]), label='CheckCounts')
