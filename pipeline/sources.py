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
"""

import dataclasses
import zlib
from typing import Any, Iterable, Iterator, List, Optional, Sequence

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline.errors import InputError

CHUNK_SIZE = 16384
# A worker's share of one uncompressed CSV file, and the size of one read.
RANGE_BYTES = 32 << 20
READ_BLOCK_BYTES = 4 << 20


@dataclasses.dataclass
class RawChunk:
  """Consecutive records of one file.

  For CSV, `records` are the raw lines as bytes (without the newline); for
  Parquet and TFRecord they are dicts of column name to value.
  """
  source: str
  first_line: int
  format: str
  records: List[Any]


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
  clear line instead of a failed distributed job.
  """
  try:
    results = FileSystems.match([pattern])
  except Exception as e:  # pylint: disable=broad-except
    raise InputError(f'{flag} {pattern}: cannot list files: {e}') from None
  metadata = [m for r in results for m in r.metadata_list]
  files = sorted(m.path for m in metadata)
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
    except Exception as e:  # pylint: disable=broad-except
      raise InputError(f'{flag}: cannot read {path}: {e}') from None
  return files


def _splittable(path: str, fmt: str) -> bool:
  return (fmt == 'csv' and CompressionTypes.detect_compression_type(path) ==
          CompressionTypes.UNCOMPRESSED)


def plan_ranges(path: str, fmt: str,
                range_bytes: int = RANGE_BYTES) -> List[FileRange]:
  """Cuts a file into ranges of about `range_bytes` that start on lines.

  One sequential scan finds the first line start at or after each multiple of
  `range_bytes` and counts the newlines before it.
  """
  whole = [FileRange(path, 0, None, 1)]
  if not _splittable(path, fmt):
    return whole
  size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
  if size <= range_bytes:
    return whole
  cuts = []  # (byte offset of a line start, its line number)
  target, base, newlines = range_bytes, 0, 0
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
        start = base + i + 1
        cuts.append((start, newlines + block.count(b'\n', 0, i + 1) + 1))
        target = max(target + range_bytes, start + 1)
      newlines += block.count(b'\n')
      base += len(block)
  cuts = [(start, line) for start, line in cuts if start < base]
  starts = [(0, 1)] + cuts
  ends = [start for start, _ in cuts] + [None]
  return [FileRange(path, start, end, line)
          for (start, line), end in zip(starts, ends)]


def _read_lines(file_range: FileRange) -> Iterator[bytes]:
  """The range's lines, without their line ending (\n or \r\n)."""
  with FileSystems.open(
      file_range.path,
      compression_type=(CompressionTypes.UNCOMPRESSED if file_range.start
                        or file_range.end is not None else
                        CompressionTypes.AUTO)) as f:
    if file_range.start:
      f.seek(file_range.start)
    remaining = (None if file_range.end is None else
                 file_range.end - file_range.start)
    tail = b''
    while remaining is None or remaining > 0:
      size = (READ_BLOCK_BYTES if remaining is None else
              min(READ_BLOCK_BYTES, remaining))
      block = f.read(size)
      if not block:
        break
      if remaining is not None:
        remaining -= len(block)
      lines = (tail + block).split(b'\n')
      tail = lines.pop()
      yield from _without_cr(lines)
    if tail:
      yield from _without_cr([tail])


def _without_cr(lines: List[bytes]) -> List[bytes]:
  for i, line in enumerate(lines):
    if line.endswith(b'\r'):
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
  for record in tf.data.TFRecordDataset(path, compression_type=compression
                                       ).as_numpy_iterator():
    try:
      example = tf.train.Example.FromString(record)
    except Exception:  # pylint: disable=broad-except
      yield {'__unparseable__': record}
      continue
    row = {}
    for name, feature in example.features.feature.items():
      kind = feature.WhichOneof('kind')
      row[name] = list(getattr(feature, kind).value) if kind else []
    yield row


_READERS = {'csv': _read_lines, 'parquet': _read_parquet,
            'tfrecord': _read_tfrecord}


class _ReadChunksFn(beam.DoFn):

  def __init__(self, fmt: str, chunk_size: int):
    self._format = fmt
    self._chunk_size = chunk_size
    self._records_read = Metrics.counter('read', 'records_read')
    self._ranges_read = Metrics.counter('read', 'ranges_read')

  def process(self, file_range: FileRange) -> Iterable[RawChunk]:
    reader = _READERS[self._format]
    path = file_range.path
    records, first = [], file_range.first_line
    n = file_range.first_line - 1
    for n, record in enumerate(reader(file_range), start=file_range.first_line):
      records.append(record)
      if len(records) >= self._chunk_size:
        self._records_read.inc(len(records))
        yield RawChunk(path, first, self._format, records)
        records, first = [], n + 1
    if records:
      self._records_read.inc(len(records))
      yield RawChunk(path, first, self._format, records)
    self._ranges_read.inc()


class ReadRawChunks(beam.PTransform):
  """Reads the given files into `RawChunk`s of numbered records."""

  def __init__(self, files: Sequence[str], fmt: str,
               chunk_size: int = CHUNK_SIZE, range_bytes: int = RANGE_BYTES):
    super().__init__()
    self._files = list(files)
    self._format = fmt
    self._chunk_size = chunk_size
    self._range_bytes = range_bytes

  def expand(self, pbegin):
    fmt, range_bytes = self._format, self._range_bytes
    return (pbegin
            | 'ListFiles' >> beam.Create(self._files)
            | 'PlanRanges' >> beam.FlatMap(
                lambda path: plan_ranges(path, fmt, range_bytes))
            | 'Spread' >> _DeterministicReshuffle()
            | 'ReadRanges' >> beam.ParDo(
                _ReadChunksFn(self._format, self._chunk_size)))


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
    return (ranges
            | 'KeyByPosition' >> beam.Map(lambda r: (_range_key(r), r))
            | 'Group' >> beam.GroupByKey()
            | 'Ungroup' >> beam.FlatMap(
                lambda kv: sorted(kv[1], key=lambda r: (r.path, r.start))))
