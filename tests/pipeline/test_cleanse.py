"""Ingest and write: every kind of bad row goes to the quarantine with a
reason, and the fast paths give exactly what the plain ones give.

Besides the cleanse rules, this covers reading files in byte ranges
(pipeline/sources.py) and the array tf.Example encoder and external sort of
the write stage (pipeline/sinks.py).
"""

import dataclasses
import glob
import gzip
import json
import os
import random
import shutil
import zlib

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
import pyarrow as pa
import pytest
import tensorflow as tf

from core.config import load_config
from pipeline import cleanse
from pipeline import sinks
from pipeline import sources
from pipeline.sources import RawChunk
from tests import datagen
from tests.conftest import CENSUS_CONFIG
from tests.conftest import TOY_CONFIG

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
  # A bounded prefix and the length, not the whole megabyte.
  assert q['raw'] == 'x' * sources.LONG_LINE_PREFIX_BYTES
  assert f'first {sources.LONG_LINE_PREFIX_BYTES} of {1 << 20} bytes' in (
      q['detail'])


def test_malformed_quoting(parser):
  q = _one_reason(parser, GOOD.replace(b'State-gov', b'"State-gov'))
  assert q['reason'] == cleanse.MALFORMED_CSV


def test_quoted_field_with_delimiter():
  toy = load_config(TOY_CONFIG)
  p = cleanse.RowParser(toy)
  batch, quarantine, counts = _parse(p, [
      b'height,visits,city,color,note,outcome',
      b'170.5, 3, "paris, fr", red, "a, b", yes'
  ])
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
  _, quarantine, _ = _parse(
      parser, [GOOD, b'bad', GOOD, b'bad'], first_line=101)
  assert [q['line'] for q in quarantine] == [102, 104]


def test_dict_records_from_parquet_or_tfrecord(census):
  p = cleanse.RowParser(census)
  row = dict(
      zip(census.column_names, [
          39, 'State-gov', 77516, 'Bachelors', 13, 'Never-married',
          'Adm-clerical', 'Not-in-family', 'White', 'Male', 2174, 0, 40,
          'United-States', '>50K.'
      ]))
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
  assert [q['reason'] for q in quarantine
         ] == [cleanse.MULTIPLE_VALUES, cleanse.WRONG_TYPE]
  assert json.loads(quarantine[0]['raw'])['age'] == [1, 2]


def test_cleanse_rows_ptransform(census):
  chunk_a = RawChunk('a.csv', 1, 'csv', [GOOD, b'', b'oops'])
  chunk_b = RawChunk('b.csv', 1, 'csv', [GOOD.replace(b'39,', b'x,', 1), GOOD])
  with test_pipeline.TestPipeline() as p:
    result = (p | beam.Create([chunk_a, chunk_b]) | cleanse.CleanseRows(census))
    rows = result.rows | 'Rows' >> beam.Map(lambda b: b.num_rows)
    reasons = result.quarantine | 'Reasons' >> beam.Map(
        lambda q: (q['source'], q['line'], q['reason']))
    totals = result.counts | beam.CombineGlobally(cleanse.SumCounts())
    assert_that(rows, equal_to([1, 1]), label='CheckRows')
    assert_that(
        reasons,
        equal_to([('a.csv', 3, cleanse.WRONG_ARITY),
                  ('b.csv', 1, cleanse.NOT_A_NUMBER)]),
        label='CheckQuarantine')
    assert_that(
        totals,
        equal_to([{
            cleanse.LINES: 5,
            cleanse.BLANK_LINES: 1,
            cleanse.ROWS_KEPT: 2,
            cleanse.ROWS_QUARANTINED: 2,
            cleanse.QUARANTINED_PREFIX + cleanse.WRONG_ARITY: 1,
            cleanse.QUARANTINED_PREFIX + cleanse.NOT_A_NUMBER: 1,
        }]),
        label='CheckCounts')


# ------------------------------------------- the vectorised CSV path


def _mutated_lines(lines, seed, n=1500):
  """Plain lines, many of them broken or unusual in some way."""
  rng = random.Random(seed)
  odd = [
      '?', '', ' ', 'NA', '39.0', '39.5', '1e3', 'inf', 'nan', '-0', '+5',
      '007', '1_000', '\xa040', '40\x1f', 'abc', '"quoted, x"', '"bad', '.5',
      '5.', '-.5', '1e400', ' 12 ', '\t7\t', 'Mail', '>50K.', 'rich'
  ]
  out = []
  for _ in range(n):
    fields = rng.choice(lines).split(', ')
    kind = rng.randrange(12)
    if kind < 5:
      for _ in range(rng.randint(1, 3)):
        fields[rng.randrange(len(fields))] = rng.choice(odd)
    line = ', '.join(fields)
    if kind == 5:
      line += ', extra'
    elif kind == 6:
      line = rng.choice(['', '   ', '| a comment', '# a comment'])
    elif kind == 7:
      line += '\r'
    data = line.encode('utf-8')
    if kind == 8:
      data = data.replace(b'a', b'\xff', 1)
    elif kind == 9:  # too long, though every field is fine once trimmed
      data = data.replace(b',', b',' + b' ' * 70000, 1)
    out.append(data)
  return out


@pytest.mark.parametrize('config_path, header',
                         [(CENSUS_CONFIG, None),
                          (TOY_CONFIG, datagen.TOY_HEADER.encode())])
def test_vectorised_csv_path_matches_record_by_record(config_path, header):
  config = load_config(config_path)
  p = cleanse.RowParser(config)
  base = ([GOOD.decode()] *
          5 if header is None else datagen.toy_rows(200, seed=1))
  for seed in range(3):
    records = ([header] if header else []) + _mutated_lines(base, seed)
    for first_line in (1, 7):
      chunk = RawChunk('in.csv', first_line, 'csv', records)
      fast = p.parse_chunk(chunk)
      reference = p._parse_records(chunk, range(len(records)))  # pylint: disable=protected-access
      assert fast[1] == reference[1]  # quarantine: same lines, same reasons
      assert dict(fast[2]) == dict(reference[2])
      assert fast[0].schema == reference[0].schema
      assert fast[0].equals(reference[0])
      # Both kinds of rows were there to merge.
      assert 0 < fast[2][cleanse.ROWS_KEPT] < len(records)


def test_vectorised_path_keeps_line_order_of_mixed_rows(parser):
  slow = GOOD.replace(b'39,', b'39.0,', 1)  # converted by the Python path
  batch, _, _ = _parse(parser, [
      GOOD, slow, b'bad',
      GOOD.replace(b'39,', b'41,', 1),
      slow.replace(b'39.0', b'42.0')
  ])
  assert batch.column('age').to_pylist() == [[39], [39], [41], [42]]


def test_record_batch_coder_round_trip(parser):
  batch, _, _ = _parse(parser, [GOOD, GOOD.replace(b'State-gov', b'?')] * 50)
  cleanse.use_record_batch_coder()  # as the job does when it builds
  coder = beam.coders.registry.get_coder(pa.RecordBatch)
  assert isinstance(coder, cleanse.RecordBatchCoder)
  data = coder.encode(batch)
  decoded = coder.decode(data)
  assert decoded.equals(batch)
  assert decoded.schema.equals(batch.schema, check_metadata=True)
  assert len(data) < batch.nbytes / 3  # compressed, not pickled


def _plain_ipc(batch):
  sink = pa.BufferOutputStream()
  with pa.ipc.new_stream(
      sink, batch.schema,
      options=pa.ipc.IpcWriteOptions(compression='zstd')) as writer:
    writer.write_batch(batch)
  return sink.getvalue().to_pybytes()


def _round_trip(batch):
  coder = cleanse.RecordBatchCoder()
  decoded = coder.decode(coder.encode(batch))
  assert decoded.schema.equals(batch.schema, check_metadata=True)
  assert decoded.equals(batch)
  for got, want in zip(decoded.columns, batch.columns):
    assert got.to_pylist() == want.to_pylist()
  return decoded


def test_record_batch_coder_keeps_every_list_layout():
  rows = 7
  batch = pa.RecordBatch.from_arrays(
      [
          # one value per row: carried without offsets
          pa.array([[i] for i in range(rows)], pa.large_list(pa.int64())),
          pa.array([[b'a'], None, [b'c'], None, [b'e'], [b'f'], None],
                   pa.large_list(pa.large_binary())),
          pa.array([[1.5], [2.5], None, [3.5], [4.5], [5.5], [6.5]],
                   pa.list_(pa.float32())),
          # not one value per row: carried as they are
          pa.array([[1, 2], [], [3], None, [4], [5], [6]],
                   pa.large_list(pa.int64())),
          pa.array([[None], [1], [2], [3], [4], [5], [6]],
                   pa.large_list(pa.int64())),
          pa.array([[]] * rows, pa.large_list(pa.int64())),
          pa.array([None] * rows, pa.large_list(pa.int64())),
          pa.array(range(rows), pa.int64()),
          pa.array([[1]] * rows,
                   pa.list_(pa.field('element', pa.int64(), nullable=False))),
          pa.array([['a'], ['b'], None, ['a'], ['a'], ['b'], ['a']],
                   pa.large_list(pa.large_string())),
          pa.LargeListArray.from_arrays(
              pa.array(range(rows + 1), pa.int64()),
              pa.array(['x', 'y'] * 3 + ['x']).dictionary_encode()),
      ],
      schema=pa.schema([
          pa.field('one', pa.large_list(pa.int64())),
          pa.field('one_or_null', pa.large_list(pa.large_binary())),
          pa.field(
              'small_list', pa.list_(pa.float32()), metadata={b'unit': b'kg'}),
          pa.field('several', pa.large_list(pa.int64())),
          pa.field('null_value', pa.large_list(pa.int64())),
          pa.field('empty', pa.large_list(pa.int64())),
          pa.field('all_null', pa.large_list(pa.int64())),
          pa.field('plain', pa.int64()),
          pa.field('named_item',
                   pa.list_(pa.field('element', pa.int64(), nullable=False))),
          pa.field('category', pa.large_list(pa.large_string())),
          pa.field('dictionary_items',
                   pa.large_list(pa.dictionary(pa.int32(), pa.string()))),
      ],
                       metadata={b'origin': b'test'}))
  _round_trip(batch)
  carried = pa.ipc.open_stream(cleanse.RecordBatchCoder().encode(batch)).schema
  assert [
      f.name
      for f in carried
      if not pa.types.is_list(f.type) and not pa.types.is_large_list(f.type)
  ] == [
      'one', 'one_or_null', 'small_list', 'all_null', 'plain', 'named_item',
      'category', 'dictionary_items'
  ]
  # Repeated strings travel dictionary-encoded, distinct ones as they are.
  assert pa.types.is_dictionary(carried.field('category').type)
  assert carried.field('one_or_null').type == pa.large_binary()
  # Slices: the list offsets of a slice index into the whole child array.
  _round_trip(batch.slice(2, 4))
  _round_trip(batch.slice(3, 0))
  _round_trip(pa.RecordBatch.from_arrays([], schema=pa.schema([])))


def test_record_batch_coder_carries_single_values_without_offsets(parser):
  batch, _, _ = _parse(parser, [GOOD, GOOD.replace(b'State-gov', b'?')] * 500)
  data = cleanse.RecordBatchCoder().encode(batch)
  # Every cleansed column holds one value per row (or a null).
  assert len(data) < 0.8 * len(_plain_ipc(batch))
  _round_trip(batch)


# ------------------------------------------------- reading in ranges


def _reference_lines(path):
  """Line by line with readline: what a numbered line is."""
  lines = []
  with open(path, 'rb') as f:
    for line in iter(f.readline, b''):
      lines.append(line.removesuffix(b'\n').removesuffix(b'\r'))
  return lines


@pytest.mark.parametrize('ending', [b'\n', b'\r\n', b''])
def test_ranges_read_every_line_once_with_its_number(tmp_path, ending):
  rng = random.Random(3)
  body = b'\n'.join(
      (b'x' * rng.choice([0, 1, 5, 40, 300])) + b'%d' % i if i % 17 else b''
      for i in range(400)).replace(b'\n',
                                   b'\r\n' if ending == b'\r\n' else b'\n')
  path = str(tmp_path / 'in.csv')
  with open(path, 'wb') as f:
    f.write(body + ending)
  expected = _reference_lines(path)
  for range_bytes in (1, 7, 100, 1000, 1 << 20):
    ranges = sources.plan_ranges(path, 'csv', range_bytes)
    if range_bytes < 1000:
      assert len(ranges) > 3
    read = sources._ReadChunksFn('csv', chunk_size=13)  # pylint: disable=protected-access
    numbered = {}
    for file_range in ranges:
      for chunk in read.process(file_range):
        for offset, line in enumerate(chunk.records):
          assert chunk.first_line + offset not in numbered
          numbered[chunk.first_line + offset] = line
    assert numbered == {i + 1: line for i, line in enumerate(expected)}


def _read_all(path, csv, range_bytes=1 << 20, chunk_size=3):
  """Every chunk of the file, through the planner and the reader."""
  read = sources._ReadChunksFn('csv', chunk_size, csv)  # pylint: disable=protected-access
  return [
      chunk for r in sources.plan_ranges(path, 'csv', range_bytes, csv)
      for chunk in read.process(r)
  ]


def _numbered(chunks):
  return sorted((chunk.line(i), record)
                for chunk in chunks
                for i, record in enumerate(chunk.records))


def test_byte_order_mark_costs_no_row(tmp_path, census):
  path = tmp_path / 'in.csv'
  path.write_bytes(sources.UTF8_BOM + GOOD + b'\n' + GOOD + b'\n')
  for csv in (census.csv, None):  # dropped with or without CSV options
    chunks = _read_all(str(path), csv)
    assert _numbered(chunks) == [(1, GOOD), (2, GOOD)]
  p = cleanse.RowParser(census)
  _, quarantine, counts = p.parse_chunk(chunks[0])
  assert quarantine == [] and counts[cleanse.ROWS_KEPT] == 2
  # Whatever the configured encoding: latin-1 too.
  latin = dataclasses.replace(census.csv, encoding='latin-1')
  assert _numbered(_read_all(str(path), latin))[0] == (1, GOOD)
  # Only at the start of a file; elsewhere it is data.
  path.write_bytes(GOOD + b'\n' + sources.UTF8_BOM + GOOD + b'\n')
  assert _numbered(_read_all(str(path),
                             census.csv))[1] == (2, sources.UTF8_BOM + GOOD)


_QUOTED = (b'height,visits,city,color,note,outcome\n'
           b'170.5, 3, "paris\r\nfr", red, "a\n\nb", yes\n'
           b'160, 2, oslo, red, x, no\n'
           b'165, 5, rome, red, x, no\n'
           b'150, 1, "unclosed, red, x, no\n'
           b'140, 2, "rome", blue, "y ""quoted""", yes\n'
           b'130, 2, "bad"x, blue, y, yes\n'
           b'120, 4, lima, green, z, no\n')


@pytest.mark.parametrize('range_bytes', [1 << 20, 40, 90])
def test_quoted_line_break_is_one_row(tmp_path, range_bytes):
  """A quoted field with line breaks is one record (numbered by its first
  line); a stray quote is one quarantined line, and the rows after it are
  read as they are. Ranges are cut outside such a record (this one spans
  four lines)."""
  toy = load_config(TOY_CONFIG)
  path = tmp_path / 'in.csv'
  path.write_bytes(_QUOTED)
  chunks = _read_all(str(path), toy.csv, range_bytes)
  numbered = _numbered(chunks)
  assert [n for n, _ in numbered] == [1, 2, 6, 7, 8, 9, 10, 11]
  assert numbered[1][1] == b'170.5, 3, "paris\nfr", red, "a\n\nb", yes'
  p = cleanse.RowParser(toy)
  rows, quarantine = [], []
  for chunk in chunks:
    batch, q, counts = p.parse_chunk(chunk)
    rows.extend(batch.to_pylist() if batch is not None else [])
    quarantine.extend(q)
    assert counts[cleanse.LINES] == len(chunk.records)
  assert [(q['line'], q['reason']) for q in quarantine
         ] == [(8, cleanse.MALFORMED_CSV), (10, cleanse.MALFORMED_CSV)]
  assert [r['city'] for r in rows] == [[b'paris\nfr'], [b'oslo'], [b'rome'],
                                       [b'rome'], [b'lima']]


@pytest.mark.parametrize('block_bytes', [1, 6, 40, 333])
def test_reads_of_any_size_give_the_same_chunks(tmp_path, monkeypatch,
                                                block_bytes):
  """A read without the quote character is taken whole, the others line by
  line: wherever reads end (inside a line, a quoted record, a long line, or
  between a stray quote and the lines it gives back), the records, their
  numbers and the chunks are those of one read of the whole file."""
  toy = load_config(TOY_CONFIG)
  opts = dataclasses.replace(toy.csv, max_line_bytes=120)
  rng = random.Random(block_bytes)
  plain = [
      b'%d, %d, oslo, red, x, no%s' % (i, i % 7, b'\r' if i % 3 else b'')
      for i in range(60)
  ]
  parts = []
  for _ in range(5):
    parts.extend(rng.sample(plain, rng.randint(3, 12)))
    parts.append(rng.choice([_QUOTED.rstrip(b'\n'), b'', b'9' * 150]))
    parts.append(rng.choice([b'7' * 5000, b'1, 2, "open', b'']))
  path = tmp_path / 'in.csv'
  path.write_bytes(sources.UTF8_BOM + b'\n'.join(parts) + b'\n')

  def chunks():
    return [(c.first_line, c.records, c.line_numbers)
            for c in _read_all(str(path), opts, chunk_size=7)]

  whole = chunks()
  assert sum(len(records) for _, records, _ in whole) > 30
  monkeypatch.setattr(sources, 'READ_BLOCK_BYTES', block_bytes)
  assert chunks() == whole


def test_quoted_line_break_beyond_the_length_limit_is_not_joined(tmp_path):
  toy = load_config(TOY_CONFIG)
  opts = dataclasses.replace(toy.csv, max_line_bytes=60)
  path = tmp_path / 'in.csv'
  path.write_bytes(b'1, 2, "open\n' + b'x' * 30 + b'\n' + b'y' * 30 +
                   b'", red, n, no\n170, 3, oslo, red, x, no\n')
  numbered = _numbered(_read_all(str(path), opts))
  assert [n for n, _ in numbered] == [1, 2, 3, 4]


def test_long_line_is_held_as_a_prefix_and_its_length(tmp_path, census,
                                                      monkeypatch):
  monkeypatch.setattr(sources, 'READ_BLOCK_BYTES', 1 << 16)
  path = tmp_path / 'in.csv'
  size = 3 << 20
  with open(path, 'wb') as f:
    f.write(GOOD + b'\n' + b'7' * size + b'\r\n' + GOOD + b'\n' + b'8' *
            (size + 1))
  numbered = _numbered(_read_all(str(path), census.csv))
  assert [n for n, _ in numbered] == [1, 2, 3, 4]
  for n in (2, 4):
    line = numbered[n - 1][1]
    assert isinstance(line, sources.LongLine)
    assert len(line) == sources.LONG_LINE_PREFIX_BYTES
    assert sources.line_length(line) == size + (n == 4)
  chunk = RawChunk('in.csv', 1, 'csv', [line for _, line in numbered])
  _, quarantine, counts = cleanse.RowParser(census).parse_chunk(chunk)
  assert counts[cleanse.ROWS_KEPT] == 2
  assert [q['reason'] for q in quarantine] == [cleanse.LINE_TOO_LONG] * 2
  assert f'line is {size} bytes' in quarantine[0]['detail']
  assert len(quarantine[0]['raw']) == sources.LONG_LINE_PREFIX_BYTES


def test_compressed_files_are_one_range(tmp_path):
  path = str(tmp_path / 'in.csv.gz')
  with gzip.open(path, 'wb') as f:
    f.write(b'a\nb\n' * 1000)
  assert sources.plan_ranges(path, 'csv',
                             10) == [sources.FileRange(path, 0, None, 1)]


def test_local_inputs_are_named_as_a_worker_elsewhere_finds_them(
    tmp_path, monkeypatch):
  """A runner's SDK workers (Flink's, Spark's) do not run in the launcher's
  directory: `--input data/x.csv` reaches them as an absolute path, and a
  file a worker cannot see is said to be that, not an IndexError."""
  (tmp_path / 'data').mkdir()
  (tmp_path / 'data' / 'b.csv').write_text('a\nb\n' * 1000)
  (tmp_path / 'data' / 'a.csv').write_text('a\nb\n' * 1000)
  monkeypatch.chdir(tmp_path)
  assert sources.resolve_files('data/*.csv', '--input') == [
      str(tmp_path / 'data' / 'a.csv'),
      str(tmp_path / 'data' / 'b.csv')
  ]
  monkeypatch.chdir('/')
  with pytest.raises(FileNotFoundError) as e:
    sources.plan_ranges('data/a.csv', 'csv', 10)
  assert str(e.value).startswith('data/a.csv: the input is not there for this '
                                 'worker (on ')
  assert str(e.value).endswith('every worker must see the input at the path '
                               'the launcher saw')


# ----------------------------------- write stage: the same bytes, any route


def _shards(directory, prefix):
  out = {}
  for path in sorted(glob.glob(os.path.join(directory, prefix + '-*'))):
    out[os.path.basename(path)] = [
        r.numpy()
        for r in tf.data.TFRecordDataset(path, compression_type='GZIP')
    ]
  return out


def _random_records(seed: int, count: int, shortest: int, longest: int) -> list:
  rng = random.Random(seed)
  return [
      bytes(rng.randrange(256)
            for _ in range(rng.randint(shortest, longest)))
      for _ in range(count)
  ]


def test_sharded_write_with_many_runs_equals_one_sort(tmp_path):
  records = _random_records(5, 3000, 1, 40)
  records += records[:100]  # duplicates are kept
  lists = [records[i:i + 250] for i in range(0, len(records), 250)]
  for name, spill in (('one', 1 << 30), ('many', 2000)):
    p = test_pipeline.TestPipeline()
    prefix = str(tmp_path / name / 'data')
    paths = ({
        'data': p | name >> beam.Create(lists)
    }
             | sinks.WriteShardedTFRecords({'data': prefix},
                                           5,
                                           str(tmp_path / 'runs' / name),
                                           spill_bytes=spill))
    # Each shard's path comes out once, when its file is complete.
    assert_that(
        paths,
        equal_to([f'{prefix}-0000{i}-of-00005.tfrecord.gz' for i in range(5)]))
    result = p.run()
    result.wait_until_finish()
    written = result.metrics().query(
        MetricsFilter().with_name('records_written'))['counters']
    assert sum(c.committed for c in written) == len(records)
  one, many = _shards(str(tmp_path / 'one'),
                      'data'), _shards(str(tmp_path / 'many'), 'data')
  assert list(one) == [f'data-0000{i}-of-00005.tfrecord.gz' for i in range(5)]
  assert one == many
  for i, (_, shard) in enumerate(sorted(one.items())):
    assert shard == sorted(r for r in records if zlib.crc32(r) % 5 == i)
  assert not glob.glob(str(tmp_path / 'runs' / '*' / '*'))  # runs removed


def test_destinations_written_together_keep_their_own_shards(tmp_path):
  records = {
      'train': _random_records(11, 900, 1, 30),
      'eval': _random_records(12, 400, 1, 30),
      'test': [],
  }
  prefixes = {name: str(tmp_path / name / 'part') for name in records}
  with test_pipeline.TestPipeline() as p:
    pcolls = {
        name:
            p | f'Create[{name}]' >> beam.Create(
                [recs[i:i + 100] for i in range(0, len(recs), 100)])
        for name, recs in records.items()
    }
    paths = pcolls | sinks.WriteShardedTFRecords(
        prefixes, 3, str(tmp_path / 'runs'), spill_bytes=1500)
    assert_that(
        paths,
        equal_to([
            f'{prefix}-0000{i}-of-00003.tfrecord.gz'
            for prefix in prefixes.values()
            for i in range(3)
        ]))
  for name, recs in records.items():
    shards = _shards(str(tmp_path / name), 'part')
    assert len(shards) == 3
    for i, (_, shard) in enumerate(sorted(shards.items())):
      assert shard == sorted(r for r in recs if zlib.crc32(r) % 3 == i), name
  assert not glob.glob(str(tmp_path / 'runs' / '*'))


def test_a_run_reads_back_in_blocks_of_any_size(tmp_path):
  # Written in several pieces: some 400 KB.
  records = _random_records(7, 2000, 0, 400)
  path = str(tmp_path / 'run')
  sinks._write_run(path, records)  # pylint: disable=protected-access
  assert os.path.getsize(path) == sum(4 + len(r) for r in records)
  # Blocks smaller than a record, than its length prefix, and larger
  # than the whole run.
  for block_bytes in (1, 3, 7, 256, 1 << 20):
    lists = list(sinks._read_run(path, block_bytes))  # pylint: disable=protected-access
    assert all(lists) and sum(lists, []) == records


def test_a_merge_of_sorted_runs_is_their_sort():
  # Runs of different lengths, read in lists of different sizes, with
  # records shared between runs and repeated within one; and no run at all.
  rng = random.Random(3)
  records = _random_records(8, 3000, 0, 6)  # short records: many repeats
  for count in (0, 1, 2, 7):
    runs = [sorted(records[i::count or 1]) for i in range(count)]
    runs += [runs[0][:50]] if runs else []

    def lists(run):
      i = 0
      while i < len(run):
        size = rng.randint(1, 40)
        yield run[i:i + size]
        i += size

    merged = list(sinks._merge_sorted([lists(r) for r in runs]))  # pylint: disable=protected-access
    assert all(merged)
    assert sum(merged, []) == sorted(sum(runs, []))


def test_every_shard_file_exists_even_when_empty(tmp_path):
  with test_pipeline.TestPipeline() as p:
    _ = ({
        'data': p | beam.Create([[b'only one record']])
    }
         | sinks.WriteShardedTFRecords({'data': str(tmp_path / 'data')}, 3,
                                       str(tmp_path / 'runs')))
  shards = _shards(str(tmp_path), 'data')
  assert len(shards) == 3
  assert sorted(sum(shards.values(), [])) == [b'only one record']


def test_a_shard_merge_that_fails_fails_the_bundle(tmp_path):
  good, bad = str(tmp_path / 'good.run'), str(tmp_path / 'bad.run')
  sinks._write_run(good, [b'a', b'b'])  # pylint: disable=protected-access
  sinks._write_run(bad, [b'c', b'd'])  # pylint: disable=protected-access
  with open(bad, 'r+b') as f:
    f.truncate(7)  # the second record's length prefix, cut short
  paths = sinks.shard_paths(str(tmp_path / 'data'), 2, '.tfrecord.gz')
  fn = sinks._MergeRunsFn(paths)  # pylint: disable=protected-access
  assert list(fn.process((0, [good]))) == [paths[0]]
  with pytest.raises(IOError, match='truncated run'):
    list(fn.process((1, [bad])))
  assert _shards(str(tmp_path),
                 'data')[os.path.basename(paths[0])] == [b'a', b'b']


def test_a_shard_merge_that_outlives_its_output_directory_leaves_it_gone(
    tmp_path):
  # A job stopped by a signal removes its staging directory while a bundle
  # thread may still be merging: the merge fails instead of re-creating it.
  run = str(tmp_path / 'runs' / 'a.run')
  sinks._write_run(run, [b'a'])  # pylint: disable=protected-access
  out = tmp_path / 'out.tmp'
  [path] = sinks.shard_paths(str(out / 'data' / 'train'), 1, '.tfrecord.gz')
  fn = sinks._MergeRunsFn([path])  # pylint: disable=protected-access
  assert list(fn.process((0, [run]))) == [path]  # the directory made here
  shutil.rmtree(out)
  with pytest.raises(tf.errors.NotFoundError):
    sinks._merge_runs(path, [])  # pylint: disable=protected-access
  assert not out.exists()
