"""Microseconds per row of serializing record batches as tf.Examples.

    .venv/bin/python -m benchmarks.example_encoding [--adult-data FILE]
        [--rows 16384] [--repeat 5]

Two batches: Adult's first rows as the job's row parser cleanses them (the
raw data, written with --write-raw) and a batch shaped like the transformed
data (one float32 or int64 per row and column, 4,096 rows: the transform's
batch size). Each is serialized two ways, alternating:

  reference  tfx_bsl's encoder, each record then re-serialized with
             `SerializeToString(deterministic=True)` (what the write stage
             did for every record, and still does for batches the array
             encoder declines)
  arrays     pipeline.example_encoding.encode_examples

Both give the same bytes (checked before timing). Prints the median of
--repeat timings of each; nothing is asserted.
"""

import argparse
import statistics
import time

from core import quiet

with quiet.tensorflow_startup():
  from tensorflow.core.example import example_pb2

import numpy as np
import pyarrow as pa
from tfx_bsl.coders import example_coder

from benchmarks import generate_census
from core.config import load_config
from pipeline import cleanse
from pipeline import example_encoding
from pipeline.preprocess import TRANSFORM_BATCH_ROWS
from pipeline.sources import RawChunk


def _reference(batch: pa.RecordBatch):
  encoder = example_coder.RecordBatchToExamplesEncoder(None)
  return [
      example_pb2.Example.FromString(r).SerializeToString(deterministic=True)
      for r in encoder.encode(batch)
  ]


def _raw_batch(adult_data: str, rows: int) -> pa.RecordBatch:
  config = load_config(str(generate_census.ROOT / 'schemas' / 'census.yaml'))
  with open(adult_data, 'rb') as f:
    lines = [line.rstrip(b'\r\n') for line in f if line.strip()][:rows]
  batch, _, _ = cleanse.RowParser(config).parse_chunk(
      RawChunk('adult.data', 1, 'csv', lines))
  return batch


def _transformed_batch(columns: int = 24) -> pa.RecordBatch:
  rng = np.random.default_rng(0)
  n = TRANSFORM_BATCH_ROWS
  offsets = pa.array(np.arange(n + 1), pa.int64())
  arrays = [
      pa.LargeListArray.from_arrays(
          offsets,
          pa.array(
              rng.normal(size=n).astype(np.float32) if j %
              2 else rng.integers(0, 1000, n))) for j in range(columns)
  ]
  return pa.RecordBatch.from_arrays(
      arrays, names=[f'feature_{j}' for j in range(columns)])


def _us_per_row(fn, batch, repeat: int) -> float:
  times = []
  for _ in range(repeat):
    t = time.perf_counter()
    fn(batch)
    times.append(time.perf_counter() - t)
  return statistics.median(times) / batch.num_rows * 1e6


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      prog='python -m benchmarks.example_encoding', description=__doc__)
  parser.add_argument(
      '--adult-data',
      default=generate_census.find_adult_data(),
      help='adult.data (default: found as the tests find it)')
  parser.add_argument('--rows', type=int, default=16384)
  parser.add_argument('--repeat', type=int, default=5)
  args = parser.parse_args(argv)
  if not args.adult_data:
    parser.error('adult.data not found: run `make data` or pass --adult-data')
  batches = {
      'raw (Adult, cleansed)': _raw_batch(args.adult_data, args.rows),
      'transformed (24 numbers)': _transformed_batch(),
  }
  print(f'{"batch":<26} {"rows":>6} {"reference us/row":>17} '
        f'{"arrays us/row":>14} {"ratio":>6}')
  for name, batch in batches.items():
    if example_encoding.encode_examples(batch) != _reference(batch):
      raise SystemExit(f'{name}: the two encoders disagree')
    reference, arrays = [], []
    for _ in range(args.repeat):  # alternating, so both see the same load
      reference.append(_us_per_row(_reference, batch, 1))
      arrays.append(_us_per_row(example_encoding.encode_examples, batch, 1))
    ref, arr = statistics.median(reference), statistics.median(arrays)
    print(f'{name:<26} {batch.num_rows:>6,} {ref:>17.2f} {arr:>14.2f} '
          f'{ref / arr:>5.1f}x')


if __name__ == '__main__':
  main()
