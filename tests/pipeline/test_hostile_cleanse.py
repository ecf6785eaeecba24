"""Hostile input to the preprocess job: no row can crash it.

Property-based (hypothesis): CSV lines of any bytes and any length up to and
just past the configured limit, numbers of every size and spelling, for
configs with every column type, a header, windows; records as Parquet and
TFRecord deliver them. Whatever the line, it is kept as a typed row or
quarantined with a reason (or counted as blank, comment or header), the
counts reconcile, the vectorised path agrees with the record-by-record one,
and kept numbers fit their column's type. CSV text of any shape reads
into the same chunks wherever the reader's reads end. Then the real job on
a file of rows that used to end it with an OverflowError.
"""

import dataclasses
import glob
import json
import math
import os
import tempfile

from hypothesis import given
from hypothesis import strategies as st
import numpy as np
import pytest

from core.config import load_config
from pipeline import cleanse
from pipeline import preprocess
from pipeline import sources
from pipeline import windows
from pipeline.sources import RawChunk
from tests import datagen
from tests.conftest import CENSUS_CONFIG
from tests.conftest import ROOT
from tests.conftest import TOY_CONFIG
from tests.fuzzing import field_text
from tests.fuzzing import fuzz_settings
from tests.fuzzing import integers
from tests.fuzzing import spelled_numbers
from tests.fuzzing import timestamps

MIXED_CONFIG = str(ROOT / 'tests' / 'data' / 'mixed.yaml')
EVENTS_CONFIG = str(ROOT / 'tests' / 'data' / 'events.yaml')
CONFIGS = {
    'census': CENSUS_CONFIG,
    'toy': TOY_CONFIG,
    'mixed': MIXED_CONFIG,
    'events': EVENTS_CONFIG
}
REASONS = frozenset(
    getattr(cleanse, name)
    for name in dir(cleanse)
    if name.isupper() and isinstance(getattr(cleanse, name), str) and
    name not in ('QUARANTINE_TAG', 'COUNTS_TAG', 'LINES', 'BLANK_LINES',
                 'COMMENT_LINES', 'HEADER_LINES', 'ROWS_KEPT',
                 'ROWS_QUARANTINED', 'QUARANTINED_PREFIX'))
FLOAT32_MAX = float(np.finfo(np.float32).max)


@pytest.fixture(scope='module')
def parsers():
  out = {}
  for name, path in CONFIGS.items():
    config = load_config(path)
    out[name] = (config, cleanse.RowParser(config))
  return out


# --------------------------------------------------------------- strategies


def _plain_value(column, config):
  """A usable value of the column's type."""
  label = config.label
  if column.name == label.column and label.is_classification:
    return st.sampled_from(list(label.classes) + list(label.aliases))
  if column.type == 'int':
    return st.integers(-10**6, 10**6).map(str)
  if column.type == 'float':
    return st.floats(-1e6, 1e6, width=32).map(repr)
  if column.type == 'timestamp':
    return st.one_of(
        st.integers(0, 2 * 10**9).map(str),
        st.sampled_from(['2024-05-01T10:00:00Z', '1999-12-31']))
  if column.type == 'bool':
    return st.sampled_from(['true', 'no', '1', '0', 'yes'])
  if column.allowed_values:
    return st.sampled_from(list(column.allowed_values))
  return st.sampled_from(['a', 'b c', 'x|y', 'State-gov', 'paris'])


def _hostile_value(column, config):
  """Anything, leaning to the column's type in every spelling."""
  if column.type in ('int', 'float'):
    typed = spelled_numbers
  elif column.type == 'timestamp':
    typed = timestamps
  else:
    typed = field_text
  return st.one_of(typed, typed, st.sampled_from(config.missing_values),
                   field_text, spelled_numbers)


def csv_lines(config):
  """Hostile CSV lines (bytes) for `config`: usable rows with a few fields
  replaced by hostile values (so that a value no check catches ends up in a
  kept row), ragged rows, any bytes, lines around the length limit."""
  opts = config.csv
  delimiter = opts.delimiter + (' ' if opts.skip_initial_space else '')
  columns = [c for c in config.columns if not c.derived]
  plain = st.tuples(*[_plain_value(c, config) for c in columns]).map(list)
  changes = st.lists(
      st.integers(0,
                  len(columns) - 1).flatmap(lambda i: st.tuples(
                      st.just(i), _hostile_value(columns[i], config))),
      max_size=3)

  def mutate(pair):
    fields, edits = pair
    for i, value in edits:
      fields[i] = value
    return fields

  typed_row = st.tuples(plain, changes).map(mutate)
  ragged_row = st.lists(
      st.one_of(field_text, spelled_numbers), max_size=len(columns) + 2)
  text = st.one_of(typed_row, typed_row, typed_row,
                   ragged_row).map(delimiter.join)
  encoded = text.map(lambda t: t.encode('utf-8', 'surrogatepass'))
  limit = opts.max_line_bytes
  near_limit = st.tuples(encoded, st.integers(
      limit - 3,
      limit + 3)).map(lambda pair: (pair[0] + b' ' * limit)[:pair[1]])
  return st.one_of(
      encoded, encoded, encoded, st.binary(max_size=300), near_limit,
      encoded.map(lambda b: sources.UTF8_BOM + b),
      st.sampled_from([
          b'', b'   ', b'\r', b'#', b'|', b'"', b'\xef\xbb', b'\xff\xfe',
          b'\x00' * 20
      ]))


def chunks(config):
  return st.tuples(
      st.lists(csv_lines(config), min_size=1, max_size=12),
      st.sampled_from([1, 2, 1000]))


# ------------------------------------------------------------- invariants


def check_parsed(parser, config, chunk):
  """Every record in exactly one place, with a reason if quarantined; the
  same as the record-by-record reference; kept numbers within their type."""
  batch, quarantine, counts = parser.parse_chunk(chunk)
  n = len(chunk.records)
  kept = batch.num_rows if batch is not None else 0
  assert counts[cleanse.LINES] == n
  assert counts[cleanse.ROWS_KEPT] == kept
  assert counts[cleanse.ROWS_QUARANTINED] == len(quarantine)
  assert kept + len(quarantine) + counts[cleanse.BLANK_LINES] + counts[
      cleanse.COMMENT_LINES] + counts[cleanse.HEADER_LINES] == n
  lines = [q['line'] for q in quarantine]
  assert len(set(lines)) == len(lines)
  assert all(chunk.first_line <= l < chunk.first_line + n for l in lines)
  for q in quarantine:
    assert set(q) == {'source', 'line', 'reason', 'detail', 'raw'}
    assert q['reason'] in REASONS, q
    assert q['detail'] and isinstance(q['raw'], str)
    assert len(q['raw']) <= max(config.csv.max_line_bytes,
                                sources.LONG_LINE_PREFIX_BYTES), q['reason']
    json.dumps(q)  # the quarantine sink writes it as JSON
    assert counts[cleanse.QUARANTINED_PREFIX + q['reason']] >= 1
  reference = parser._parse_records(  # pylint: disable=protected-access
      chunk, range(n))
  assert reference[1] == quarantine
  assert dict(reference[2]) == dict(counts)
  assert (reference[0] is None) == (batch is None)
  if batch is None:
    return None
  assert batch.equals(reference[0])
  for column in config.raw_columns:
    if column.raw_type == 'float':
      values = [
          v for row in batch.column(column.name).to_pylist() if row for v in row
      ]
      assert all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in values)
  return batch


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_any_csv_line_is_kept_or_quarantined_with_a_reason(parsers, name):
  config, parser = parsers[name]

  @fuzz_settings(60)
  @given(chunks(config))
  def prop(drawn):
    lines, first_line = drawn
    batch = check_parsed(parser, config,
                         RawChunk('hostile.csv', first_line, 'csv', lines))
    if batch is not None and config.windows:
      # Window values over whatever was kept: finite or missing.
      filled = windows.fill_windows(batch, config.windows)
      for w in config.windows:
        for row in filled.column(w.name).to_pylist():
          assert row is None or (len(row) == 1 and math.isfinite(row[0]))

  prop()


@fuzz_settings(60)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from([
                'amount', 'visits', 'member', 'signup', 'shop', 'tags',
                'review', 'target', 'other'
            ]),
            st.one_of(
                st.none(), integers, st.floats(), st.binary(max_size=20),
                st.text(max_size=20), timestamps,
                st.lists(
                    st.one_of(integers, st.floats(), st.binary(max_size=5),
                              st.text(max_size=5)),
                    max_size=3))),
        min_size=1,
        max_size=8))
def test_any_parquet_or_tfrecord_record_is_kept_or_quarantined(records):
  config = load_config(MIXED_CONFIG)
  parser = cleanse.RowParser(config)
  for fmt in ('parquet', 'tfrecord'):
    batch, quarantine, counts = parser.parse_chunk(
        RawChunk('hostile.data', 1, fmt, records))
    kept = batch.num_rows if batch is not None else 0
    assert kept + len(quarantine) == len(records) == counts[cleanse.LINES]
    assert all(q['reason'] in REASONS for q in quarantine)


# CSV text as a writer makes it, and damaged: plain fields, quoted fields
# with line breaks and doubled quotes, quotes left open, fields past the toy
# config's length limit and past what the reader keeps of a long line, any
# bytes; rows ending in \n or \r\n, a byte-order mark or not.
_FIELD = st.one_of(
    st.binary(max_size=6),
    st.lists(st.sampled_from([b'a', b'\n', b'""', b',', b'\r\n']),
             max_size=5).map(lambda parts: b'"' + b''.join(parts) + b'"'),
    st.sampled_from([b'"open', b'x' * 70, b'y' * 5000]),
)
_CSV_TEXT = st.tuples(
    st.sampled_from([b'', sources.UTF8_BOM]),
    st.lists(
        st.tuples(
            st.lists(_FIELD, min_size=1, max_size=4).map(b','.join),
            st.sampled_from([b'\n', b'\r\n'])).map(b''.join),
        max_size=14).map(b''.join),
).map(b''.join)


@fuzz_settings(30)
@given(
    _CSV_TEXT,
    st.integers(min_value=1, max_value=9),
)
def test_any_bytes_read_in_reads_of_any_size_give_the_same_chunks(
    data, chunk_size):
  """The reader takes a read without the quote character whole and the
  others line by line: wherever its reads end, the chunks (records, their
  numbers, where chunks are cut) are those of one read of the whole file."""
  csv = dataclasses.replace(load_config(TOY_CONFIG).csv, max_line_bytes=60)
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, 'in.csv')
    with open(path, 'wb') as f:
      f.write(data)
    file_range = sources.FileRange(path, 0, None, 1)
    read = sources._ReadChunksFn('csv', chunk_size, csv)  # pylint: disable=protected-access

    def chunks():
      return [(c.first_line, c.records, c.line_numbers)
              for c in read.process(file_range)]

    whole = chunks()
    saved = sources.READ_BLOCK_BYTES
    try:
      for block_bytes in range(1, 41):
        sources.READ_BLOCK_BYTES = block_bytes
        assert chunks() == whole, block_bytes
    finally:
      sources.READ_BLOCK_BYTES = saved


# ------------------------------------------------ each numeric path, named

GOOD = (b'39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, '
        b'Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K')


@pytest.mark.parametrize('column', [b'39,', b'77516,', b'2174,'])
@pytest.mark.parametrize('value', [
    b'9223372036854775808', b'99999999999999999999', b'1e300',
    b'-9223372036854775809', b'1' * 5000
])
def test_integers_beyond_int64_are_out_of_range(parsers, column, value):
  _, parser = parsers['census']
  line = GOOD.replace(column, value + b',', 1)
  batch, quarantine, counts = parser.parse_chunk(
      RawChunk('in.csv', 1, 'csv', [GOOD, line, GOOD]))
  assert batch.num_rows == 2
  assert [(q['line'], q['reason']) for q in quarantine
         ] == [(2, cleanse.OUT_OF_RANGE)]
  assert 'does not fit in a 64-bit integer' in quarantine[0]['detail']
  assert counts['quarantined.out_of_range'] == 1


def test_largest_int64_is_kept(parsers):
  _, parser = parsers['census']
  line = GOOD.replace(b'77516,', b'9223372036854775807,')
  batch, quarantine, _ = parser.parse_chunk(
      RawChunk('in.csv', 1, 'csv', [line]))
  assert quarantine == []
  assert batch.column('fnlwgt').to_pylist() == [[2**63 - 1]]


def test_every_numeric_path_names_out_of_range(parsers):
  """float beyond float32 or overflowing to inf, timestamps past year 9999,
  dict records (Parquet, TFRecord) with values no column type holds; a
  spelled infinity stays non_finite_number."""
  config, parser = parsers['mixed']
  header = b'amount,visits,member,signup,shop,tags,review,target'
  good = b'12.5,3,yes,2024-05-01T10:00:00Z,s1,a|b,"fine, thanks",high'
  cases = {
      b'1e39,3': cleanse.OUT_OF_RANGE,  # beyond float32
      b'1e309,3': cleanse.OUT_OF_RANGE,  # overflows a double
      b'-' + b'9' * 400 + b',3': cleanse.OUT_OF_RANGE,
      b'inf,3': cleanse.NON_FINITE,
      b'12.5,18446744073709551616': cleanse.OUT_OF_RANGE,
  }
  lines = [header, good]
  for prefix in cases:
    lines.append(prefix + good[good.index(b',yes'):])
  stamps = {
      b'253402300800': cleanse.OUT_OF_RANGE,
      b'1e20': cleanse.OUT_OF_RANGE,
      b'9999-12-31T23:59:59-01:00': cleanse.OUT_OF_RANGE,
      b'9999-12-31T23:59:59Z': None,
      b'2024-02-30': cleanse.NOT_A_TIMESTAMP
  }
  for stamp in stamps:
    lines.append(good.replace(b'2024-05-01T10:00:00Z', stamp))
  batch, quarantine, _ = parser.parse_chunk(RawChunk('in.csv', 1, 'csv', lines))
  reasons = {q['line']: q['reason'] for q in quarantine}
  expected = list(cases.values()) + list(stamps.values())
  assert [reasons.get(i + 3) for i in range(len(expected))] == expected
  assert batch.num_rows == 2  # the good row and the year-9999 one

  records = [{
      'amount': 2.0**200,
      'visits': 1
  }, {
      'visits': 2**64
  }, {
      'amount': [1.0],
      'visits': [2**63]
  }, {
      'signup': 10**30
  }, {
      'signup': float('inf')
  }, {
      'amount': 10**400
  }]
  for record in records:
    record.setdefault('target', 'high')
  _, quarantine, _ = parser.parse_chunk(
      RawChunk('in.parquet', 1, 'parquet', records))
  assert [q['reason'] for q in quarantine] == [
      cleanse.OUT_OF_RANGE, cleanse.OUT_OF_RANGE, cleanse.OUT_OF_RANGE,
      cleanse.OUT_OF_RANGE, cleanse.NOT_A_TIMESTAMP, cleanse.OUT_OF_RANGE
  ]


def test_regression_label_beyond_its_type_is_out_of_range():
  config = load_config(MIXED_CONFIG)
  text = config.source_text.replace(
      'label:\n  column: target\n  task: binary\n  classes: ["low", "high"]\n'
      '  positive: "high"', 'label:\n  column: target\n  task: regression')
  text = text.replace('  stratify: true', '  stratify: false')
  text = text.replace('{name: target, type: string}',
                      '{name: target, type: float}')
  from core.config import parse_config  # pylint: disable=g-import-not-at-top
  parser = cleanse.RowParser(parse_config(text))
  good = b'12.5,3,yes,2024-05-01T10:00:00Z,s1,a|b,fine,'
  _, quarantine, _ = parser.parse_chunk(
      RawChunk('in.csv', 2, 'csv',
               [good + b'1.5', good + b'1e40', good + b'-1e999']))
  assert [q['reason'] for q in quarantine] == [cleanse.OUT_OF_RANGE] * 2


# ------------------------------------------------------- the real job


def test_preprocess_quarantines_overflowing_rows_and_succeeds(tmp_path, capsys):
  """Rows that used to end the whole job with OverflowError (and exit 1,
  the code for data anomalies) are quarantined as out_of_range; the job
  publishes its output with exit 0 and the counts reconcile. A byte-order
  mark at the start of the file costs no row."""
  rows = datagen.toy_rows(300, seed=5)
  hostile = []
  for i, value in enumerate([
      '9223372036854775808', '99999999999999999999', '1e300',
      '-9223372036854775809', '1' * 400
  ]):
    fields = rows[i].split(', ')
    fields[1] = value  # visits: int
    hostile.append(', '.join(fields))
  for i, value in enumerate(['1e39', '1e309', '-' + '9' * 400]):
    fields = rows[10 + i].split(', ')
    fields[0] = value  # height: float
    hostile.append(', '.join(fields))
  path = tmp_path / 'toy.csv'
  text = datagen.TOY_HEADER + '\n' + '\n'.join(rows + hostile) + '\n'
  path.write_bytes(sources.UTF8_BOM + text.encode('utf-8'))
  out = tmp_path / 'out'
  code = preprocess.main([
      '--config', TOY_CONFIG, '--input',
      str(path), '--output-dir',
      str(out), '--num-shards', '1'
  ])
  assert code == 0, capsys.readouterr().err
  manifest = json.loads((out / 'manifest.json').read_text())
  records = [
      json.loads(line)
      for name in glob.glob(str(out / 'quarantine' / '*'))
      for line in open(name, encoding='utf-8')
      if line.strip()
  ]
  assert sorted(r['line'] for r in records) == list(
      range(len(rows) + 2,
            len(rows) + 2 + len(hostile)))
  assert {r['reason'] for r in records} == {cleanse.OUT_OF_RANGE}
  assert all(len(r['raw']) <= 4096 for r in records)
  text = json.dumps(manifest)
  assert '"out_of_range": 8' in text, text[:2000]
  # The header (after the byte-order mark) was read as the header.
  assert 'header_mismatch' not in text
