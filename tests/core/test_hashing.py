"""Row positions must never move: a changed hash would move rows between
splits from one version to the next."""

import numpy as np
import pyarrow as pa
import pytest

from core import hashing


def _batch(repeat: int) -> pa.RecordBatch:
  return pa.RecordBatch.from_arrays([
      pa.array(
          [[b'a'], [b'bb'], [b'a'], None, [], [b'a', b'bb'], [b''], [b'a']] *
          repeat, pa.list_(pa.binary())),
      pa.array([['x'], ['y'], None, ['x'], ['z'], ['x'], ['y'], ['\u00e9']] *
               repeat, pa.large_list(pa.string())),
      pa.array([[1], [2], [3], None, [5], [6], [7], [8]] * repeat,
               pa.list_(pa.int64())),
  ],
                                    names=['s', 't', 'i'])


def test_positions_are_pinned():
  # Computed once, by hashing every string byte by byte; any faster way of
  # computing them must give exactly these.
  positions = hashing.row_positions(_batch(40), 11)
  assert [float(p).hex() for p in positions[:8]] == [
      '0x1.9782f11276478p-2', '0x1.ec24d198e6f40p-6', '0x1.ed8ee360aeca1p-1',
      '0x1.8fa67cfe1da48p-4', '0x1.4125e47bc78fdp-1', '0x1.4230d70eed4b4p-1',
      '0x1.568582436528dp-1', '0x1.861b9fb9e1262p-1'
  ]
  assert float(positions.sum()).hex() == '0x1.4e28b770c180ap+7'
  # Few rows (no dictionary) and many rows (dictionary) agree.
  assert np.array_equal(hashing.row_positions(_batch(1), 11), positions[:8])


@pytest.mark.parametrize('kind', [
    pa.binary(), pa.large_binary(),
    pa.string(), pa.large_string()
])
def test_repeated_strings_hash_as_if_hashed_one_by_one(kind):
  rng = np.random.default_rng(3)
  words = ['', 'a', 'bb', 'ccc', 'some longer value', '\u00e9t\u00e9']
  values = [words[i] for i in rng.integers(0, len(words), 1000)]
  values = [None if i % 97 == 0 else v for i, v in enumerate(values)]
  if kind in (pa.binary(), pa.large_binary()):
    values = [v.encode('utf-8') if v is not None else None for v in values]
  array = pa.array(values, kind).slice(13, 900)  # an offset into the buffers
  valid = np.asarray(array.is_valid())
  direct = hashing._binary_hashes(array)  # pylint: disable=protected-access
  through = hashing._repeated_binary_hashes(array)  # pylint: disable=protected-access
  assert np.array_equal(through[valid], direct[valid])


def test_distinct_null_and_short_columns_hash_as_before():
  unique = pa.array([str(i).encode() for i in range(500)], pa.binary())
  short = pa.array([b'x', b'y', b'x'], pa.binary())
  nulls = pa.array([None] * 100, pa.binary())
  for array in (unique, short):
    assert np.array_equal(
        hashing._repeated_binary_hashes(array),  # pylint: disable=protected-access
        hashing._binary_hashes(array))  # pylint: disable=protected-access
  assert len(hashing._repeated_binary_hashes(nulls)) == 100  # pylint: disable=protected-access
  column = pa.array([None] * 100, pa.list_(pa.binary()))
  assert len(set(hashing.column_hashes(column).tolist())) == 1
