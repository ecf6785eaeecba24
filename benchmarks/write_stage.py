"""The write stage's two costly steps: encoding records and merging shards.

    .venv/bin/python -m benchmarks.write_stage [--adult-data FILE]
        [--rows 16384] [--repeat 5] [--merge-records 200000]

Encoding, in microseconds per row. Two batches: Adult's first rows as the job's row parser cleanses them (the
raw data, written with --write-raw) and a batch shaped like the transformed
data (one float32 or int64 per row and column, 4,096 rows: the transform's
batch size). Each is serialized two ways, alternating:

  reference  tfx_bsl's encoder, each record then re-serialized with
             `SerializeToString(deterministic=True)` (what the write stage
             did for every record, and still does for batches the array
             encoder declines)
  arrays     pipeline.example_encoding.encode_examples

Both give the same bytes (checked before timing).

Merging: --merge-records transformed-shaped records in 4 shards of 36
sorted runs each (a shard's share of 36 spills, as at about a million rows)
are merged into gzip TFRecord files by the write stage's own merge
(`sinks._merge_runs`), one shard after another as the stage merges them, and
then two at a time on two threads; both write the same bytes. The process
uses the job's allocator setting (preprocess._limit_heap_growth).

Prints the median of --repeat timings of each, alternating; nothing is
asserted.
"""

import argparse
from concurrent import futures
import hashlib
import os
import random
import statistics
import tempfile
import time
from typing import Dict, List

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
from pipeline import sinks
from pipeline.preprocess import _limit_heap_growth
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
      prog='python -m benchmarks.write_stage', description=__doc__)
  parser.add_argument(
      '--adult-data',
      default=generate_census.find_adult_data(),
      help='adult.data (default: found as the tests find it)')
  parser.add_argument('--rows', type=int, default=16384)
  parser.add_argument('--repeat', type=int, default=5)
  parser.add_argument('--merge-records', type=int, default=200_000)
  args = parser.parse_args(argv)
  _limit_heap_growth()
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
  _merge(args.merge_records, max(1, args.repeat // 2))


_SHARDS, _RUNS = 4, 36


def _spill(records: List[bytes], directory: str) -> List[List[str]]:
  """Each shard's sorted runs, as the spill writes them."""
  runs: List[List[str]] = [[] for _ in range(_SHARDS)]
  for shard in range(_SHARDS):
    for run in range(_RUNS):
      path = os.path.join(directory, f'{shard}-{run}.run')
      sinks._write_run(
          path,
          sorted(records[shard + _SHARDS * run::_SHARDS *  # pylint: disable=protected-access
                         _RUNS]))
      runs[shard].append(path)
  return runs


def _merge(count: int, repeat: int) -> None:
  batch = _transformed_batch()
  records: List[bytes] = []
  while len(records) < count:
    records += example_encoding.encode_examples(batch) or []
  records = records[:count]
  random.Random(0).shuffle(records)
  threads = 2
  timings: Dict[int, List[float]] = {1: [], threads: []}
  digests = {}
  with tempfile.TemporaryDirectory() as tmp:
    for _ in range(repeat):
      for workers in timings:
        directory = os.path.join(tmp, str(workers))
        os.makedirs(directory, exist_ok=True)
        runs = _spill(records, directory)
        paths = [os.path.join(directory, f'{s}.gz') for s in range(_SHARDS)]
        t = time.perf_counter()
        with futures.ThreadPoolExecutor(workers) as pool:
          list(pool.map(sinks._merge_runs, paths, runs))  # pylint: disable=protected-access
        timings[workers].append(time.perf_counter() - t)
        digests[workers] = [_digest(path) for path in paths]
  if len(set(map(tuple, digests.values()))) != 1:
    raise SystemExit('the merges wrote different bytes')
  one, many = (statistics.median(timings[w]) for w in timings)
  print(f'\nmerge {count:,} records, {_SHARDS} shards of {_RUNS} runs: '
        f'one shard at a time {one:.2f} s, {threads} threads {many:.2f} s '
        f'({one / many:.2f}x)')


def _digest(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


if __name__ == '__main__':
  main()
