"""Write stage: deterministic TFRecord shards, the quarantine and small JSON files.

Beam's own file sinks assign records to shards round-robin from a random
start, so two runs over the same input write different bytes. Here a record's
shard is a fingerprint of its bytes and each shard is written in sorted order:
the same input gives byte-identical shards on any runner, and every shard file
exists even when it receives no record.
"""

import json
import zlib
from typing import Any, Iterable, List, Optional, Tuple

import apache_beam as beam
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from tensorflow.core.example import example_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.coders import example_coder


def shard_paths(prefix: str, num_shards: int, suffix: str) -> List[str]:
  return [f'{prefix}-{i:05d}-of-{num_shards:05d}{suffix}'
          for i in range(num_shards)]


class _EncodeExamplesFn(beam.DoFn):
  """Record batches -> serialized tf.Examples (tfx_bsl's C++ encoder).

  The C++ encoder writes the feature map in hash order, which changes from one
  process to the next; re-serializing deterministically (features sorted by
  name) is what makes the output bytes reproducible.
  """

  def __init__(self, schema: Optional[schema_pb2.Schema]):
    self._schema = schema
    self._encoder = None

  def setup(self):
    self._encoder = example_coder.RecordBatchToExamplesEncoder(self._schema)

  def process(self, element):
    batch = element[0] if isinstance(element, tuple) else element
    for record in self._encoder.encode(batch):
      yield example_pb2.Example.FromString(record).SerializeToString(
          deterministic=True)


class EncodeExamples(beam.PTransform):
  """Record batches (or TFT's (batch, passthrough) pairs) -> tf.Example bytes."""

  def __init__(self, schema: Optional[schema_pb2.Schema] = None):
    super().__init__()
    self._schema = schema

  def expand(self, batches):
    return batches | 'Encode' >> beam.ParDo(_EncodeExamplesFn(self._schema))


class _WriteShardFn(beam.DoFn):

  def __init__(self, paths: List[str]):
    self._paths = paths
    self._records = Metrics.counter('write', 'records_written')

  def process(self, keyed: Tuple[int, Iterable[bytes]]):
    shard, records = keyed
    path = self._paths[shard]
    tf.io.gfile.makedirs(path.rsplit('/', 1)[0])
    with tf.io.TFRecordWriter(path, options='GZIP') as writer:
      n = 0
      for record in sorted(records):
        writer.write(record)
        n += 1
    self._records.inc(n)
    yield path


class WriteShardedTFRecords(beam.PTransform):
  """Serialized records -> `{prefix}-SSSSS-of-NNNNN.tfrecord.gz`, deterministically."""

  def __init__(self, prefix: str, num_shards: int):
    super().__init__()
    self._num_shards = num_shards
    self._paths = shard_paths(prefix, num_shards, '.tfrecord.gz')

  def expand(self, records):
    n = self._num_shards
    keyed = records | 'KeyByFingerprint' >> beam.Map(
        lambda r: (zlib.crc32(r) % n, r))
    # Every shard gets a (possibly empty) group, so every shard file exists.
    empty = (records.pipeline
             | 'ShardIds' >> beam.Create([(i, None) for i in range(n)]))
    return ((keyed, empty)
            | 'Merge' >> beam.Flatten()
            | 'GroupByShard' >> beam.GroupByKey()
            | 'DropPlaceholders' >> beam.MapTuple(
                lambda k, rs: (k, [r for r in rs if r is not None]))
            | 'WriteShards' >> beam.ParDo(_WriteShardFn(self._paths)))


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
    return (records
            | 'ToJson' >> beam.Map(
                lambda r: json.dumps(r, ensure_ascii=False, sort_keys=True))
            | 'WriteLines' >> beam.io.WriteToText(
                FileSystems.join(self._directory, 'part'),
                file_name_suffix='.jsonl'))

