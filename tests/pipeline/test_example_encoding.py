"""The array encoder writes exactly the bytes of deterministic serialization.

Every comparison is against the protobuf runtime: tfx_bsl's encoder makes
the Examples and `SerializeToString(deterministic=True)` writes them.
"""

import concurrent.futures

import numpy as np
import pyarrow as pa
import pytest
from tensorflow.core.example import example_pb2
from tensorflow.core.example import feature_pb2
from tfx_bsl.coders import example_coder

from core.config import load_config
from pipeline import cleanse
from pipeline import example_encoding
from pipeline.sources import RawChunk
from tests.conftest import CENSUS_CONFIG

_TYPES = {
    'int': pa.int64(),
    'float': pa.float32(),
    'binary': pa.binary(),
    'large_binary': pa.large_binary(),
}


def _reference(batch):
  encoder = example_coder.RecordBatchToExamplesEncoder(None)
  return [
      example_pb2.Example.FromString(r).SerializeToString(deterministic=True)
      for r in encoder.encode(batch)
  ]


def _value(rng, kind):
  if kind == 'int':
    return int(rng.integers(-2**63, 2**63 - 1) >> rng.integers(0, 64))
  if kind == 'float':
    return float(np.float32(rng.normal(0, 10.0**rng.integers(-3, 30))))
  # Long values now and then: the encoder writes them another way.
  length = rng.integers(0, 2000) if rng.random() < 0.02 else rng.integers(0, 40)
  return bytes(rng.integers(0, 256, length, dtype=np.uint8))


def _column(rng, n, kind, shape):
  """A list column: 'one' value per row, 'optional' (null, empty or one),
  'many' (null, empty or several) or 'constant' (the same value)."""
  rows = []
  constant = _value(rng, kind)
  for _ in range(n):
    r = rng.random()
    if shape == 'constant':
      rows.append([constant])
    elif shape == 'one':
      rows.append([_value(rng, kind)])
    elif r < 0.15:
      rows.append(None)
    elif r < 0.3:
      rows.append([])
    else:
      count = 1 if shape == 'optional' else int(rng.integers(1, 5))
      rows.append([_value(rng, kind) for _ in range(count)])
  list_type = pa.large_list if rng.random() < 0.5 else pa.list_
  return pa.array(rows, list_type(_TYPES[kind]))


def _random_batch(rng):
  n = int(rng.integers(1, 300))
  names = [
      'age', 'age_bucket', 'education', 'b', 'a_', 'x' * 200, 'label', 'é',
      'f' * int(rng.integers(1, 130))
  ]
  names = list(rng.permutation(names))[:int(rng.integers(1, len(names)))]
  columns = [
      _column(rng, n, rng.choice(list(_TYPES)),
              rng.choice(['one', 'optional', 'many', 'constant']))
      for _ in names
  ]
  return pa.RecordBatch.from_arrays(columns, names=names)


def test_random_batches_encode_as_the_protobuf_runtime_writes_them():
  rng = np.random.default_rng(7)
  for _ in range(60):
    batch = _random_batch(rng)
    assert example_encoding.encode_examples(batch) == _reference(batch)
    sliced = batch.slice(batch.num_rows // 3, batch.num_rows // 2)
    if sliced.num_rows:
      assert example_encoding.encode_examples(sliced) == _reference(sliced)


def test_records_stay_as_written_while_later_batches_are_encoded():
  """The encoder builds each batch in buffers it keeps for the next one, on
  each thread: what it returned must not change when they are reused, by
  the next batch (of any size) or by another thread at the same time."""
  rng = np.random.default_rng(19)
  batches = [_random_batch(rng) for _ in range(24)]
  batches.sort(key=lambda b: b.num_rows)  # buffers grow, then are reused
  batches += batches[::-1]
  encoded = [example_encoding.encode_examples(b) for b in batches]
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    threaded = list(pool.map(example_encoding.encode_examples, batches))
  for batch, records, records_in_threads in zip(batches, encoded, threaded):
    assert records == records_in_threads == _reference(batch)


def test_dense_columns():
  rng = np.random.default_rng(3)
  n = 257
  floats = rng.normal(size=2 * n).astype(np.float32)
  floats[::7] = -0.0
  ints = rng.integers(-2**63, 2**63 - 1, 2 * n, dtype=np.int64) >> 9
  batch = pa.RecordBatch.from_arrays([
      pa.LargeListArray.from_arrays(
          pa.array(np.arange(0, 2 * n + 1, 2), pa.int64()), pa.array(floats)),
      pa.LargeListArray.from_arrays(
          pa.array(np.arange(n + 1), pa.int64()), pa.array(ints[:n])),
      pa.ListArray.from_arrays(
          pa.array(np.arange(n + 1), pa.int32()), pa.array(floats[:n])),
  ],
                                     names=['pair', 'id', 'score'])
  assert example_encoding.encode_examples(batch) == _reference(batch)
  assert example_encoding.encode_examples(batch.slice(5, 100)) == _reference(
      batch.slice(5, 100))


def _census_lines(n, seed):
  """Adult-shaped rows, `?` (missing) in one field of ten."""
  rng = np.random.default_rng(seed)
  words = [
      'State-gov', 'Bachelors', 'Never-married', 'Adm-clerical', 'Male',
      'White', 'United-States', 'Self-emp-not-inc', 'Husband', 'Female'
  ]
  lines = []
  for _ in range(n):
    fields = [
        str(rng.integers(0, 100_000)) if kind == 'i' else rng.choice(words)
        for kind in 'isisisssssiiis'
    ]
    fields = ['?' if rng.random() < 0.1 else f for f in fields]
    fields.append(rng.choice(['<=50K', '>50K']))
    lines.append(', '.join(fields).encode())
  return lines


def test_cleansed_census_rows_encode_as_the_protobuf_runtime_writes_them():
  parser = cleanse.RowParser(load_config(CENSUS_CONFIG))
  lines = _census_lines(500, seed=11)
  batch, _, _ = parser.parse_chunk(RawChunk('in.csv', 1, 'csv', lines))
  assert batch.num_rows > 100 and batch.column('workclass').null_count
  assert example_encoding.encode_examples(batch) == _reference(batch)


@pytest.mark.parametrize('column', [
    pa.array([[[1]], [[2, 3]]], pa.large_list(pa.large_list(pa.int64()))),
    pa.array([[1.0], [2.0]], pa.large_list(pa.float64())),
    pa.array([[1, None], [2]], pa.large_list(pa.int64())),
    pa.LargeListArray.from_arrays(
        pa.array([0, 1, 2], pa.int64()),
        pa.array(['a', 'b']).dictionary_encode()),
    pa.array([1, 2], pa.int64()),
    pa.FixedSizeListArray.from_arrays(pa.array([1, 2], pa.int64()), 1),
    pa.array([['a'], ['b']], pa.large_list(pa.large_string())),
])
def test_declines_what_tf_example_lists_do_not_hold_as_is(column):
  batch = pa.RecordBatch.from_arrays([column], names=['x'])
  assert example_encoding.encode_examples(batch) is None


def test_declines_a_null_list_that_spans_values():
  valid = pa.array([True, False, True]).buffers()[1]
  column = pa.LargeListArray.from_buffers(
      pa.large_list(pa.int64()),
      3, [valid, pa.array([0, 1, 2, 3], pa.int64()).buffers()[1]],
      children=[pa.array([1, 2, 3], pa.int64())])
  assert column.null_count == 1
  batch = pa.RecordBatch.from_arrays([column], names=['x'])
  assert example_encoding.encode_examples(batch) is None


def test_varints_match_the_protobuf_runtime():
  values = [0, 1, 127, 128, 300, 2**21, 2**35 + 5, 2**63, 2**64 - 1]
  digits, lengths = example_encoding.varint_bytes(np.array(values, np.uint64))
  for value, row, length in zip(values, digits, lengths):
    message = feature_pb2.Int64List(value=[value - 2**64 * (value >= 2**63)])
    # 0a <len> <varint>: the packed field of one value
    assert bytes(row[:length]) == message.SerializeToString()[2:]
    assert example_encoding.varint(value) == bytes(row[:length])
