"""Read stage: raw files to chunks of numbered records.

Each record keeps its source file and its 1-based position (line number for
CSV, record index for Parquet and TFRecord), so that a row quarantined later
can be traced back to the exact place it came from. Records travel in chunks
of a few thousand so that per-element Beam overhead stays small.

Uncompressed CSV files larger than RANGE_BYTES are read in byte ranges that
start on line boundaries, planned by one fast scan that also counts the lines
before each range; the ranges (small descriptors, not data) are spread over
the workers, so one big file is read and cleansed in parallel. Compressed CSV,
Parquet and TFRecord files are one range each. Chunks depend only on the files
and these constants, never on the runner, so every runner sees the same
chunks.

Paths go through Beam filesystems, so gs:// and other remote paths work
unchanged; `.gz`/`.bz2` CSV files are decompressed transparently.

A UTF-8 byte-order mark at the start of a CSV file is not data, whatever the
configured encoding: it is dropped, so the first row is read like any other.
Given the dataset's CSV options (`csv=`), a CSV record is also:
* a line that ends inside a quoted field, joined with the lines that
  complete it (the line break stays in the field), as a CSV reader reads
  them, up to `max_line_bytes` in all; the record keeps the number of its
  first line;
* for a line longer than `max_line_bytes`, never the whole line: the reader
  keeps its first bytes and its length (`LongLine`), and the cleanse stage
  quarantines it.
Without CSV options every line is a record and no line is cut.
"""

import collections
import csv as csv_lib
import dataclasses
import itertools
import os
import socket
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
)
import zlib

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from google.protobuf import message
import pyarrow.parquet as pq

from core.config import CsvOptions
from core.errors import InputError

CHUNK_SIZE = 16384
# A worker's share of one uncompressed CSV file, and the size of one read.
RANGE_BYTES = 32 << 20
READ_BLOCK_BYTES = 4 << 20
# TFRecords read per iterator step.
_TFRECORD_BATCH = 1024
UTF8_BOM = b'\xef\xbb\xbf'
# How much of a line beyond max_line_bytes is kept, for the quarantine.
LONG_LINE_PREFIX_BYTES = 4096
# How far past a range boundary the planner looks for a cut between two lines
# without a quote character (see plan_ranges).
_QUOTE_FREE_CUT_SEARCH_BYTES = 1 << 20


class LongLine(bytes):
  """The first bytes of a line over the length limit, and its full length.

  A bytes value (so it travels and is handled like any line), the
  prefix only; `length` is the length of the whole line in bytes.
  """

  length: int

  def __new__(cls, prefix: bytes, length: int):
    line = super().__new__(cls, prefix)
    line.length = length
    return line

  def __reduce__(self):
    return (LongLine, (bytes(self), self.length))


def line_length(line: bytes) -> int:
  """The length of a line in bytes, also of one the reader cut short."""
  return getattr(line, 'length', len(line))


@dataclasses.dataclass
class RawChunk:
  """Consecutive records of one file.

  For CSV, `records` are the raw lines as bytes (without the newline); for
  Parquet and TFRecord they are dicts of column name to value.

  Record i is at line `first_line + i`, unless `line_numbers` is set: a CSV
  record that spans lines (a quoted field with a line break) moves the
  numbers of the records after it, and then `line_numbers[i]` is the line
  record i starts on.
  """
  source: str
  first_line: int
  format: str
  records: List[Any]
  line_numbers: Optional[List[int]] = None

  def line(self, offset: int) -> int:
    """The line (or record index) record `offset` starts on."""
    if self.line_numbers is not None:
      return self.line_numbers[offset]
    return self.first_line + offset


@dataclasses.dataclass(frozen=True)
class FileRange:
  """The lines of `path` that start in [start, end) (end None: end of file);
  `first_line` is the line number of the first of them."""
  path: str
  start: int
  end: Optional[int]
  first_line: int


def resolve_files(pattern: str, flag: str) -> List[str]:
  """Expands a file pattern, failing with a clear message when it is unusable.

  Done in the launcher rather than on workers so that a typo in a path is one
  clear line instead of a failed distributed job. Files on this machine are
  named by absolute paths: a runner's workers (Flink's or Spark's SDK
  workers) do not run in the launcher's directory.
  """
  try:
    results = FileSystems.match([pattern])
  except Exception as e:  # noqa: BLE001 - any filesystem's error is the user's
    raise InputError(f'{flag} {pattern}: cannot list files: {e}') from None
  metadata = [m for r in results for m in r.metadata_list]
  files = sorted(
      os.path.abspath(m.path) if FileSystems.get_scheme(m.path) is
      None else m.path for m in metadata)
  if not files:
    raise InputError(f'{flag} {pattern}: no file matches this pattern')
  if all(m.size_in_bytes == 0 for m in metadata):
    raise InputError(f'{flag} {pattern}: input is empty '
                     f'({len(files)} file(s), all 0 bytes)')
  for path in files:
    try:
      # Through the same decompression the reader will use, so a corrupt
      # .gz fails here with its name rather than inside a running job.
      with FileSystems.open(path) as f:
        f.read(1)
    except Exception as e:  # noqa: BLE001 - any filesystem's error is the user's
      raise InputError(f'{flag}: cannot read {path}: {e}') from None
  return files


def _splittable(path: str, fmt: str) -> bool:
  return (fmt == 'csv' and CompressionTypes.detect_compression_type(path)
          == CompressionTypes.UNCOMPRESSED)


def plan_ranges(path: str,
                fmt: str,
                range_bytes: int = RANGE_BYTES,
                csv: Optional[CsvOptions] = None) -> List[FileRange]:
  """Cuts a file into ranges of about `range_bytes` that start on lines.

  One sequential scan finds the first line start at or after each multiple of
  `range_bytes` and counts the newlines before it.

  With CSV options, a cut is moved on (up to 1 MiB) until neither the line
  before nor the line after it holds the quote character, so that a quoted
  field with line breaks is not cut in two: such a record starts and ends on
  a line with a quote, and every cut next to a quote-free line pair lies
  outside it unless the field spans four lines or more.
  """
  whole = [FileRange(path, 0, None, 1)]
  if not _splittable(path, fmt):
    return whole
  found = FileSystems.match([path])[0].metadata_list
  if not found:
    # Listed by the launcher, not here: a worker on another machine, or one
    # whose file system does not hold the file at that path.
    raise FileNotFoundError(
        f'{path}: the input is not there for this worker (on '
        f'{socket.gethostname()}); every worker must see the input at the '
        'path the launcher saw')
  size = found[0].size_in_bytes
  if size <= range_bytes:
    return whole
  cuts = []  # (byte offset of a line start, its line number)
  target, base, newlines = range_bytes, 0, 0
  quote = _quote_byte(csv)
  with FileSystems.open(
      path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    while True:
      block = f.read(READ_BLOCK_BYTES)
      if not block:
        break
      while target - 1 < base + len(block):
        # The first line that starts at or after `target` begins after the
        # first newline at or after `target - 1`.
        i = block.find(b'\n', max(target - 1 - base, 0))
        if i < 0:
          break  # keep looking in the next block
        if quote is not None:
          i = _quote_free_cut(block, i, quote)
        start = base + i + 1
        cuts.append((start, newlines + block.count(b'\n', 0, i + 1) + 1))
        target = max(target + range_bytes, start + 1)
      newlines += block.count(b'\n')
      base += len(block)
  cuts = [(start, line) for start, line in cuts if start < base]
  starts = [(0, 1)] + cuts
  ends = [start for start, _ in cuts] + [None]
  return [
      FileRange(path, start, end, line)
      for (start, line), end in zip(starts, ends)
  ]


def _quote_free_cut(block: bytes, i: int, quote: bytes) -> int:
  """The first newline at or after block[i] whose neighbouring lines hold no
  quote character, looking at most _QUOTE_FREE_CUT_SEARCH_BYTES ahead (and
  within the block); i itself when there is none."""
  limit = min(len(block), i + _QUOTE_FREE_CUT_SEARCH_BYTES)
  j = i
  while j < limit:
    before = block.rfind(b'\n', 0, j) + 1
    after = block.find(b'\n', j + 1)
    if after < 0:
      break
    if quote not in block[before:after]:
      return j
    j = after
  return i


def _quote_byte(csv: Optional[CsvOptions]) -> Optional[bytes]:
  """The quote character as the one byte it is in the file, or None when
  records are not joined (no CSV options, or an encoding in which the
  quote is not one ASCII byte)."""
  if csv is None:
    return None
  try:
    quote = csv.quote_char.encode(csv.encoding)
    ascii_compatible = (
        bytes(range(128)).decode(csv.encoding) == bytes(
            range(128)).decode('ascii'))
  except (UnicodeError, LookupError):
    return None
  return quote if len(quote) == 1 and ascii_compatible else None


def _read_lines(file_range: FileRange,
                csv: Optional[CsvOptions] = None) -> Iterator[bytes]:
  """The range's CSV records, without their line ending (\n or \r\n).

  Without CSV options, one record per line; with them, as described in the
  module docstring (byte-order mark, quoted line breaks, long lines).
  """
  for _, record in _read_records(file_range, csv):
    yield record


def _read_records(
    file_range: FileRange,
    csv: Optional[CsvOptions] = None) -> Iterator[Tuple[int, bytes]]:
  """(line number, record) for the range's CSV records."""
  for number, run in _record_runs(file_range, csv):
    yield from enumerate(run, number)


def _record_runs(
    file_range: FileRange,
    csv: Optional[CsvOptions] = None) -> Iterator[Tuple[int, List[bytes]]]:
  """The range's CSV records in runs on consecutive lines: (line number of
  the run's first record, the records).

  A read block without the quote character is a run as it is. The lines of
  any other block are looked at one by one (_join_quoted), and the records
  that come out of them on consecutive lines make runs. Nearly all lines of
  most files are plain, and a Python step per line would be most of the
  cost of reading them.
  """
  limit = csv.max_line_bytes if csv is not None else None
  quote = _quote_byte(csv)
  blocks = _physical_blocks(file_range, limit, quote)
  if file_range.start == 0:
    blocks = _without_bom(blocks)
  lines = _BlockLines(blocks, file_range.first_line)
  if quote is None:  # no block holds it
    while True:
      plain = lines.whole_block()
      if plain is None:
        return
      yield plain
  assert csv is not None  # a quote byte comes from CSV options
  # Records on consecutive lines, joined into one run before it is yielded.
  pending: List[bytes] = []
  pending_start = 0
  for first, records in _join_quoted(lines, csv, quote):
    if (len(records) == 1 and pending and
        first == pending_start + len(pending)):
      pending.append(records[0])
      continue
    if pending:
      yield pending_start, pending
    pending_start, pending = first, records
  if pending:
    yield pending_start, pending


class _BlockLines:
  """Numbered lines of read blocks: taken one by one, or a block at a time
  where none of its lines has been taken."""

  def __init__(self, blocks: Iterator[Tuple[List[bytes], bool]],
               first_line: int):
    self._blocks = blocks
    self._lines: List[bytes] = []
    self._next = 0  # of self._lines
    self._number = first_line  # of the next line

  def whole_block(self) -> Optional[Tuple[int, List[bytes]]]:
    """(number of its first line, its lines) of the next block if none of
    its lines has been taken and it holds no quote character; None
    otherwise, or after the last block. A block it does not return is taken
    line by line."""
    if self._next < len(self._lines):
      return None
    lines: List[bytes] = []
    while not lines:  # a read inside a long line has none
      block = next(self._blocks, None)
      if block is None:
        self._lines, self._next = [], 0
        return None
      lines, quoted = block
    if quoted:
      self._lines, self._next = lines, 0
      return None
    self._lines, self._next = [], 0
    number = self._number
    self._number += len(lines)
    return number, lines

  def take(self) -> Optional[Tuple[int, bytes]]:
    """The next (line number, line); None after the last."""
    while self._next >= len(self._lines):
      block = next(self._blocks, None)
      if block is None:
        return None
      self._lines, self._next = block[0], 0
    line = self._lines[self._next]
    self._next += 1
    self._number += 1
    return self._number - 1, line


_OPEN, _CLOSED, _BROKEN = 'open', 'closed', 'broken'


def _join_quoted(lines: _BlockLines, csv: CsvOptions,
                 quote: bytes) -> Iterator[Tuple[int, List[bytes]]]:
  """(line number of the first, records) for each record taken line by line
  (one record) and for each whole block of plain lines (all of them).

  Joins a line that ends inside a quoted field with the lines that complete
  it. A join is kept only when the joined record is well-formed CSV within
  max_line_bytes. Otherwise (a stray quote, say) the opening line is a record
  of its own, which the cleanse stage quarantines, and the lines after it are
  read again as they are: one broken line never takes good rows with it.
  """
  again: collections.deque = collections.deque()  # taken, to be read again

  def take():
    return again.popleft() if again else lines.take()

  while True:
    if not again:
      plain = lines.whole_block()
      if plain is not None:
        yield plain
        continue
    item = take()
    if item is None:
      return
    number, line = item
    if (quote not in line or isinstance(line, LongLine) or
        _csv_state(line, csv) != _OPEN):
      yield number, [line]
      continue
    parts, size, taken, joined = [line], len(line), [], None
    while joined is None:
      following = take()
      if following is None:
        break
      taken.append(following)
      size += 1 + line_length(following[1])
      if isinstance(following[1], LongLine) or size > csv.max_line_bytes:
        break
      parts.append(following[1])
      state = _csv_state(b'\n'.join(parts), csv)
      if state == _CLOSED:
        joined = b'\n'.join(parts)
      elif state == _BROKEN:
        break
    if joined is not None:
      yield number, [joined]
    else:
      yield number, [line]
      again.extendleft(reversed(taken))


def _csv_state(record: bytes, csv: CsvOptions) -> str:
  """_OPEN if the record ends inside a quoted field (the next line continues
  it), _CLOSED if it is one well-formed CSV record, else _BROKEN."""
  try:
    text = record.decode(csv.encoding)
  except UnicodeDecodeError:
    return _BROKEN
  try:
    rows = list(
        csv_lib.reader([text],
                       delimiter=csv.delimiter,
                       quotechar=csv.quote_char,
                       skipinitialspace=csv.skip_initial_space,
                       strict=True))
  except csv_lib.Error as e:
    return _OPEN if 'unexpected end of data' in str(e) else _BROKEN
  return _CLOSED if len(rows) == 1 else _BROKEN


def _without_bom(
    blocks: Iterator[Tuple[List[bytes], bool]]
) -> Iterator[Tuple[List[bytes], bool]]:
  """The blocks with a byte-order mark dropped from the first line."""
  for lines, quoted in blocks:
    if lines:
      first = lines[0]
      if first.startswith(UTF8_BOM):
        lines[0] = (
            LongLine(first[len(UTF8_BOM):], first.length - len(UTF8_BOM))
            if isinstance(first, LongLine) else first[len(UTF8_BOM):])
      yield lines, quoted
      yield from blocks
      return
    yield lines, quoted


def _physical_blocks(
    file_range: FileRange, limit: Optional[int],
    quote: Optional[bytes]) -> Iterator[Tuple[List[bytes], bool]]:
  """The range's lines without their ending, a read at a time, and whether
  they may hold `quote` (never when it is None); a line over `limit` bytes
  as a LongLine, without ever holding more than its first bytes."""
  keep = None if limit is None else max(limit + 1, LONG_LINE_PREFIX_BYTES)
  with FileSystems.open(
      file_range.path,
      compression_type=(CompressionTypes.UNCOMPRESSED
                        if file_range.start or file_range.end is not None else
                        CompressionTypes.AUTO)) as f:
    if file_range.start:
      f.seek(file_range.start)
    remaining = (None if file_range.end is None else file_range.end -
                 file_range.start)
    tail = b''
    dropped = 0  # bytes of the current (over-long) line not kept in `tail`
    while remaining is None or remaining > 0:
      size = (
          READ_BLOCK_BYTES if remaining is None else min(
              READ_BLOCK_BYTES, remaining))
      block = f.read(size)
      if not block:
        break
      if remaining is not None:
        remaining -= len(block)
      if dropped:
        end = block.find(b'\n')
        if end < 0:
          dropped += len(block)
          continue
        cr = int(block[end - 1:end] == b'\r') if end else 0
        # Its bytes are gone: it may have held the quote.
        yield ([_long_line(tail,
                           len(tail) + dropped + end - cr)], quote is not None)
        tail, dropped, block = b'', 0, block[end + 1:]
      data = tail + block
      lines = data.split(b'\n')
      tail = lines.pop()
      if b'\r' in data:
        lines = _without_cr(lines)
      if keep is not None and limit is not None:
        if lines and max(map(len, lines)) > limit:
          lines = [
              l if len(l) <= limit else _long_line(l, len(l)) for l in lines
          ]
        if len(tail) > keep:
          dropped = len(tail) - keep
          tail = tail[:keep]
      yield lines, quote is not None and quote in data
    if dropped:
      yield [_long_line(tail, len(tail) + dropped)], quote is not None
    elif tail:
      line = _without_cr([tail])[0]
      yield [(line if limit is None or len(line) <= limit else _long_line(
          line, len(line)))], quote is not None and quote in line


def _long_line(line: bytes, length: int) -> bytes:
  """A line over the limit: its first bytes, and its full length."""
  return LongLine(line[:LONG_LINE_PREFIX_BYTES], length)


def _without_cr(lines: List[bytes]) -> List[bytes]:
  for i, line in enumerate(lines):
    if line.endswith(b'\r') and not isinstance(line, LongLine):
      lines[i] = line[:-1]
  return lines


def _read_parquet(file_range: FileRange) -> Iterator[dict]:
  with FileSystems.open(
      file_range.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    for batch in pq.ParquetFile(f).iter_batches(batch_size=CHUNK_SIZE):
      yield from batch.to_pylist()


def _read_tfrecord(file_range: FileRange) -> Iterator[dict]:
  # Imported here: workers that only read CSV never pay for TensorFlow's import
  # in this DoFn.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = file_range.path
  compression = 'GZIP' if path.endswith('.gz') else ''
  # Read in batches: one iterator step per record cost more than decoding it.
  batches = tf.data.TFRecordDataset(
      path, compression_type=compression).batch(_TFRECORD_BATCH)
  for record in itertools.chain.from_iterable(batches.as_numpy_iterator()):
    try:
      example = tf.train.Example.FromString(record)
    except message.DecodeError:
      yield {'__unparseable__': record}
      continue
    row = {}
    for name, feature in example.features.feature.items():
      kind = feature.WhichOneof('kind')
      row[name] = list(getattr(feature, kind).value) if kind else []
    yield row


# The records of a file range, by input format (CSV: physical lines).
RECORD_READERS: Dict[str, Callable[[FileRange], Iterator[Any]]] = {
    'csv': _read_lines,
    'parquet': _read_parquet,
    'tfrecord': _read_tfrecord
}


def _record_runs_of(
    file_range: FileRange, fmt: str,
    csv: Optional[CsvOptions]) -> Iterator[Tuple[int, List[Any]]]:
  """(line number or record index of the first, records) for runs of
  consecutive records of a range."""
  if fmt == 'csv':
    yield from _record_runs(file_range, csv)
    return
  records = RECORD_READERS[fmt](file_range)
  first = file_range.first_line
  while True:
    run = list(itertools.islice(records, CHUNK_SIZE))
    if not run:
      return
    yield first, run
    first += len(run)


class _ReadChunksFn(beam.DoFn):

  def __init__(self,
               fmt: str,
               chunk_size: int,
               csv: Optional[CsvOptions] = None):
    self._format = fmt
    self._chunk_size = chunk_size
    self._csv = csv
    self._records_read = Metrics.counter('read', 'records_read')
    self._ranges_read = Metrics.counter('read', 'ranges_read')

  def process(self, file_range: FileRange) -> Iterable[RawChunk]:
    path = file_range.path
    records: List[Any] = []
    numbers: List[int] = []
    for first, run in _record_runs_of(file_range, self._format, self._csv):
      done = 0
      while done < len(run):
        n = min(len(run) - done, self._chunk_size - len(records))
        records.extend(run[done:done + n])
        numbers.extend(range(first + done, first + done + n))
        done += n
        if len(records) >= self._chunk_size:
          yield self._chunk(path, records, numbers)
          records, numbers = [], []
    if records:
      yield self._chunk(path, records, numbers)
    self._ranges_read.inc()

  def _chunk(self, path: str, records: List[Any],
             numbers: List[int]) -> RawChunk:
    self._records_read.inc(len(records))
    consecutive = numbers[-1] - numbers[0] == len(numbers) - 1
    return RawChunk(path, numbers[0], self._format, records,
                    None if consecutive else numbers)


class ReadRawChunks(beam.PTransform):
  """Reads the given files into `RawChunk`s of numbered records.

  Pass the dataset's CSV options as `csv` so that CSV records are read as the
  module docstring describes (quoted line breaks, long lines); without them
  every line is a record.
  """

  def __init__(self,
               files: Sequence[str],
               fmt: str,
               chunk_size: int = CHUNK_SIZE,
               range_bytes: int = RANGE_BYTES,
               csv: Optional[CsvOptions] = None):
    super().__init__()
    self._files = list(files)
    self._format = fmt
    self._chunk_size = chunk_size
    self._range_bytes = range_bytes
    self._csv = csv if fmt == 'csv' else None

  def expand(self, pbegin):
    fmt, range_bytes, csv = self._format, self._range_bytes, self._csv
    return (pbegin
            | 'ListFiles' >> beam.Create(self._files)
            | 'PlanRanges' >>
            beam.FlatMap(lambda path: plan_ranges(path, fmt, range_bytes, csv))
            | 'Spread' >> _DeterministicReshuffle()
            | 'ReadRanges' >> beam.ParDo(
                _ReadChunksFn(self._format, self._chunk_size, csv)))


def _range_key(file_range: FileRange) -> int:
  return zlib.crc32(f'{file_range.path}:{file_range.start}'.encode()) % 4096


class _DeterministicReshuffle(beam.PTransform):
  """Breaks fusion like beam.Reshuffle, but with keys derived from content.

  beam.Reshuffle keys elements at random, which makes the order downstream
  analyzers see differ from run to run; keying ranges by their position keeps
  repeated runs on the same input identical. Only the small range
  descriptors go through it, never the data.
  """

  def expand(self, ranges):
    return (
        ranges
        | 'KeyByPosition' >> beam.Map(lambda r: (_range_key(r), r))
        | 'Group' >> beam.GroupByKey()
        | 'Ungroup' >>
        beam.FlatMap(lambda kv: sorted(kv[1], key=lambda r: (r.path, r.start))))
