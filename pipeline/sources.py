"""Read stage: raw files to chunks of numbered records.

Each record keeps its source file and its 1-based position (line number for
CSV, record index for Parquet and TFRecord), so that a row quarantined later
can be traced back to the exact place it came from. Records travel in chunks
of a few thousand so that per-element Beam overhead stays small; files are read
whole by one worker each (sharded inputs parallelise across files) and a
Reshuffle spreads the chunks for cleansing.

Paths go through Beam filesystems, so gs:// and other remote paths work
unchanged; `.gz`/`.bz2` CSV files are decompressed transparently.
"""

import dataclasses
import zlib
from typing import Any, Iterable, Iterator, List, Sequence

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline.errors import InputError

CHUNK_SIZE = 4096


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


def _read_lines(path: str) -> Iterator[bytes]:
  with FileSystems.open(path) as f:
    while True:
      line = f.readline()
      if not line:
        return
      if line.endswith(b'\n'):
        line = line[:-1]
      if line.endswith(b'\r'):
        line = line[:-1]
      yield line


def _read_parquet(path: str) -> Iterator[dict]:
  with FileSystems.open(
      path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    for batch in pq.ParquetFile(f).iter_batches(batch_size=CHUNK_SIZE):
      yield from batch.to_pylist()


def _read_tfrecord(path: str) -> Iterator[dict]:
  # Imported here: workers that only read CSV never pay for TensorFlow's import
  # in this DoFn.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
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
    self._files_read = Metrics.counter('read', 'files_read')

  def process(self, path: str) -> Iterable[RawChunk]:
    reader = _READERS[self._format]
    records, first = [], 1
    n = 0
    for n, record in enumerate(reader(path), start=1):
      records.append(record)
      if len(records) >= self._chunk_size:
        self._records_read.inc(len(records))
        yield RawChunk(path, first, self._format, records)
        records, first = [], n + 1
    if records:
      self._records_read.inc(len(records))
      yield RawChunk(path, first, self._format, records)
    self._files_read.inc()


class ReadRawChunks(beam.PTransform):
  """Reads the given files into `RawChunk`s of numbered records."""

  def __init__(self, files: Sequence[str], fmt: str,
               chunk_size: int = CHUNK_SIZE):
    super().__init__()
    self._files = list(files)
    self._format = fmt
    self._chunk_size = chunk_size

  def expand(self, pbegin):
    return (pbegin
            | 'ListFiles' >> beam.Create(self._files)
            | 'ReadFiles' >> beam.ParDo(
                _ReadChunksFn(self._format, self._chunk_size))
            | 'Spread' >> _DeterministicReshuffle())


def _chunk_key(chunk: RawChunk) -> int:
  return zlib.crc32(f'{chunk.source}:{chunk.first_line}'.encode()) % 4096


class _DeterministicReshuffle(beam.PTransform):
  """Breaks fusion like beam.Reshuffle, but with keys derived from content.

  beam.Reshuffle keys elements at random, which makes the order downstream
  analyzers see differ from run to run; keying chunks by their position keeps
  repeated runs on the same input identical.
  """

  def expand(self, chunks):
    return (chunks
            | 'KeyByPosition' >> beam.Map(lambda c: (_chunk_key(c), c))
            | 'Group' >> beam.GroupByKey()
            | 'Ungroup' >> beam.FlatMap(
                lambda kv: sorted(kv[1],
                                  key=lambda c: (c.source, c.first_line))))
