"""Write stage: deterministic TFRecord shards, the quarantine and small JSON files.

Beam's own file sinks assign records to shards round-robin from a random
start, so two runs over the same input write different bytes. Here a record's
shard is a fingerprint of its bytes and each shard is written in sorted order:
the same input gives byte-identical shards on any runner, and every shard file
exists even when it receives no record.

Sorting is external, so memory does not grow with the data: each worker keeps
at most SPILL_BYTES of a destination's records, writes them out as sorted runs
(one per shard) under a temporary directory, and only the run paths are
grouped by shard, the shards of all destinations in one grouping; a shard is
then the merge of its runs, reading ahead a fixed budget shared by all of them
(more runs, smaller reads); shards are merged one at a time.
"""

import bisect
import json
import struct
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple
import uuid
import zlib

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import WindowedValue
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.coders import example_coder

from pipeline import example_encoding

# Records a worker holds before writing them out as sorted runs.
SPILL_BYTES = 16 << 20
# A run is written, and read, in pieces of at most this size: below the
# job's mmap threshold (preprocess._limit_heap_growth), each piece comes from
# the heap. Larger ones are each a new mapping, faulted in page by page: reads
# of up to 1 MB made about 55,000 page faults per 110 MB shard.
_RUN_PIECE_BYTES = 64 << 10
# What a shard's merge reads ahead, over all of its runs: the number of runs
# grows with the data, this does not.
_MERGE_READ_BYTES = 8 << 20
_MIN_RUN_READ_BYTES = 16 << 10
_LENGTH = struct.Struct('<I')
# Shards are deflated at zlib's fastest level: on transformed tf.Examples
# (their feature names repeat in every record) it compresses at about twice
# the speed of the default level 6 for files about a quarter larger.
_SHARD_OPTIONS = tf.io.TFRecordOptions(
    compression_type='GZIP', compression_level=1)


def shard_paths(prefix: str, num_shards: int, suffix: str) -> List[str]:
  return [
      f'{prefix}-{i:05d}-of-{num_shards:05d}{suffix}' for i in range(num_shards)
  ]


class _EncodeExamplesFn(beam.DoFn):
  """Record batches -> serialized tf.Examples, deterministically.

  Batches of plain list columns (the raw and the transformed data) are
  encoded with array operations (pipeline.example_encoding). Anything else
  goes through tfx_bsl's C++ encoder; that writes the feature map in hash
  order, which changes from one process to the next, so each of its records
  is re-serialized deterministically. Both give the same bytes for the same
  features.
  """

  def __init__(self, schema: Optional[schema_pb2.Schema]):
    self._schema = schema
    self._encoder: Optional[example_coder.RecordBatchToExamplesEncoder] = None

  def setup(self):
    self._encoder = example_coder.RecordBatchToExamplesEncoder(self._schema)

  def process(self, element):
    batch = element[0] if isinstance(element, tuple) else element
    fast = example_encoding.encode_examples(batch)
    if fast is not None:
      yield fast
      return
    assert self._encoder is not None  # setup() runs before process()
    yield [
        example_pb2.Example.FromString(record).SerializeToString(
            deterministic=True) for record in self._encoder.encode(batch)
    ]


class EncodeExamples(beam.PTransform):
  """Record batches (or TFT's (batch, passthrough) pairs) -> one list of
  serialized tf.Examples per batch."""

  def __init__(self, schema: Optional[schema_pb2.Schema] = None):
    super().__init__()
    self._schema = schema

  def expand(self, batches):
    # Declared, as Beam would infer it: to infer it, Beam interprets the
    # bytecode of `process` and of every function it calls (the array
    # encoder's), 30-40 ms for each of the job's three to six encoders.
    return batches | 'Encode' >> beam.ParDo(_EncodeExamplesFn(
        self._schema)).with_output_types(Any)


def _write_run(path: str, records: List[bytes]) -> None:
  """Length-prefixed records, in the given order.

  Written in pieces of about `_RUN_PIECE_BYTES`: a whole run joined at once
  (some 4 MB) was a new mapping for every run.
  """
  pack = _LENGTH.pack
  size = sum(map(len, records)) + _LENGTH.size * len(records)
  step = max(1, len(records) * _RUN_PIECE_BYTES // max(1, size))
  with FileSystems.create(
      path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    for i in range(0, len(records), step):
      f.write(b''.join([
          part for record in records[i:i + step]
          for part in (pack(len(record)), record)
      ]))


def _read_run(path: str,
              block_bytes: int = _RUN_PIECE_BYTES) -> Iterator[List[bytes]]:
  """A run's records, as lists: those that each read of `block_bytes`
  completes (never an empty list)."""
  with FileSystems.open(
      path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    data = b''
    unpack = _LENGTH.unpack_from
    while True:
      block = f.read(block_bytes)
      if not block:
        if data:
          raise IOError(f'{path}: truncated run')
        return
      data = data + block if data else block
      records, offset, end = [], 0, len(data)
      while offset + 4 <= end:
        (length,) = unpack(data, offset)
        if offset + 4 + length > end:
          break
        records.append(data[offset + 4:offset + 4 + length])
        offset += 4 + length
      data = data[offset:]
      if records:
        yield records


class _Cursor:
  """Where the merge is in one run: its current list of records (empty once
  the run is done), the position in that list, and the lists still unread."""

  __slots__ = ('records', 'start', 'rest')

  def __init__(self, rest: Iterator[List[bytes]]):
    self.records: List[bytes] = next(rest, [])
    self.start = 0
    self.rest = rest


def _merge_sorted(runs: List[Iterator[List[bytes]]]) -> Iterator[List[bytes]]:
  """Sorted runs, each read as non-empty lists of records -> their merge, as
  sorted lists.

  Each step takes from every run's current list the records up to the
  smallest of those lists' last records (no record still unread is smaller)
  and sorts them together: `list.sort` merges the sorted pieces in C.
  `heapq.merge`, one Python step per record, was slower.
  """
  live = [c for c in map(_Cursor, runs) if c.records]
  while len(live) > 1:
    bound = min(c.records[-1] for c in live)
    merged: List[bytes] = []
    for c in live:
      end = bisect.bisect_right(c.records, bound, c.start)
      merged += c.records[c.start:end]
      c.start = end
      if end == len(c.records):
        c.records, c.start = next(c.rest, []), 0
    live = [c for c in live if c.records]
    merged.sort()
    yield merged
  for c in live:
    yield c.records[c.start:]
    yield from c.rest


class _SpillSortedRunsFn(beam.DoFn):
  """Lists of records -> (file, path of a sorted run of that file's records).

  A record goes to shard `crc32 % num_shards` of its destination, file
  `first_file` + shard of the write. Holds up to `spill_bytes` of records,
  then writes each file's share sorted to its own run file.
  """

  def __init__(self, temp_dir: str, first_file: int, num_shards: int,
               spill_bytes: int):
    self._temp_dir = temp_dir
    self._first_file = first_file
    self._num_shards = num_shards
    self._spill_bytes = spill_bytes
    self._buffers: List[List[bytes]] = []
    self._size = 0

  def start_bundle(self):
    self._buffers = [[] for _ in range(self._num_shards)]
    self._size = 0

  def process(self, records):
    if isinstance(records, bytes):
      records = [records]
    n, buffers = self._num_shards, self._buffers
    crc32 = zlib.crc32
    for record in records:
      buffers[crc32(record) % n].append(record)
      self._size += len(record) + 64  # bytes object and list overhead
    if self._size >= self._spill_bytes:
      yield from self._spill()

  def finish_bundle(self):
    for keyed in self._spill():
      yield WindowedValue(keyed,
                          window.GlobalWindow().max_timestamp(),
                          (window.GlobalWindow(),))

  def _spill(self) -> List[Tuple[int, str]]:
    runs = []
    for shard, records in enumerate(self._buffers):
      if records:
        records.sort()
        file = self._first_file + shard
        path = FileSystems.join(self._temp_dir,
                                f'{file:05d}-{uuid.uuid4().hex}.run')
        _write_run(path, records)
        runs.append((file, path))
    self._buffers = [[] for _ in range(self._num_shards)]
    self._size = 0
    return runs


def _merge_runs(path: str, runs: List[str]) -> int:
  """Writes the merge of sorted runs to a gzip TFRecord file and deletes the
  runs; returns the number of records. The file's directory must exist: a
  merge that outlives its job (stopped by a signal) must fail, not bring
  back the output directory the job's clean-up removed."""
  n = 0
  block_bytes = min(
      _RUN_PIECE_BYTES,
      max(_MIN_RUN_READ_BYTES, _MERGE_READ_BYTES // max(1, len(runs))))
  with tf.io.TFRecordWriter(path, options=_SHARD_OPTIONS) as writer:
    write = writer.write
    for records in _merge_sorted([_read_run(r, block_bytes) for r in runs]):
      for record in records:
        write(record)
      n += len(records)
  if runs:
    FileSystems.delete(runs)
  return n


class _MergeRunsFn(beam.DoFn):
  """(file, run paths) -> the file's gzip TFRecord shard, records sorted;
  outputs the path once the file is complete.

  A shard is merged on the bundle's thread, one after another. Merges on two
  threads side by side (TensorFlow's record writer deflates without the GIL)
  took twice the CPU time inside the job and longer in all: the writer
  releases and retakes the GIL for every record, and at level 1 deflating is
  a small part of a record's cost.
  """

  def __init__(self, paths: List[str]):
    self._paths = paths
    self._records = Metrics.counter('write', 'records_written')

  def process(self, keyed: Tuple[int, Iterable[Optional[str]]]):
    shard, runs = keyed
    path = self._paths[shard]
    tf.io.gfile.makedirs(path.rsplit('/', 1)[0])
    self._records.inc(
        _merge_runs(path, sorted(r for r in runs if r is not None)))
    yield path


class WriteShardedTFRecords(beam.PTransform):
  """{destination: serialized records (or lists of them)} ->
  `{prefixes[destination]}-SSSSS-of-NNNNN.tfrecord.gz`, deterministically;
  outputs each file's path once the file is complete.

  Each destination's records are spilled where they are produced (into
  sorted runs under `temp_dir`); only the runs' paths come together, so
  several destinations share one grouping and one set of merges. Records
  are never flattened across destinations: the runner would hold such a
  collection in memory whole.
  """

  def __init__(self,
               prefixes: Dict[str, str],
               num_shards: int,
               temp_dir: str,
               spill_bytes: int = SPILL_BYTES):
    super().__init__()
    self._prefixes = dict(prefixes)
    self._num_shards = num_shards
    self._temp_dir = temp_dir
    self._spill_bytes = spill_bytes

  def expand(self, records):
    n = self._num_shards
    runs = [
        records[name] | f'SpillSortedRuns[{name}]' >> beam.ParDo(
            _SpillSortedRunsFn(self._temp_dir, i * n, n, self._spill_bytes))
        for i, name in enumerate(self._prefixes)
    ]
    paths = [
        path for prefix in self._prefixes.values()
        for path in shard_paths(prefix, n, '.tfrecord.gz')
    ]
    # Every file gets a (possibly empty) group, so every shard file exists.
    empty = (
        runs[0].pipeline
        | 'ShardIds' >> beam.Create([(i, None) for i in range(len(paths))]))
    return (runs + [empty]
            | 'Merge' >> beam.Flatten()
            | 'GroupByShard' >> beam.GroupByKey()
            | 'WriteShards' >> beam.ParDo(_MergeRunsFn(paths)))


def write_json(path: str, value: Any) -> None:
  """Writes one JSON document through Beam filesystems (local or remote)."""
  with FileSystems.create(path) as f:
    f.write(json.dumps(value, indent=2, sort_keys=True).encode('utf-8'))
    f.write(b'\n')


def write_text(path: str, text: str) -> None:
  with FileSystems.create(path) as f:
    f.write(text.encode('utf-8'))


def read_json(path: str) -> Any:
  with FileSystems.open(path) as f:
    return json.loads(f.read().decode('utf-8'))


class WriteJson(beam.PTransform):
  """A single-element PCollection -> one JSON file."""

  def __init__(self, path: str):
    super().__init__()
    self._path = path

  def expand(self, pcoll):
    path = self._path
    return pcoll | 'WriteJson' >> beam.Map(lambda v: write_json(path, v))


class WriteQuarantine(beam.PTransform):
  """Quarantine dicts -> JSON lines under `{directory}/part-*.jsonl`."""

  def __init__(self, directory: str):
    super().__init__()
    self._directory = directory

  def expand(self, records):
    return (
        records
        | 'ToJson' >>
        beam.Map(lambda r: json.dumps(r, ensure_ascii=False, sort_keys=True))
        | 'WriteLines' >> beam.io.WriteToText(
            FileSystems.join(self._directory, 'part'),
            file_name_suffix='.jsonl'))
