"""Keyed hashes of rows and column values: where a row's split comes from.

A row's position in [0, 1) is a keyed hash of its values and a seed, never a
random draw: the same data always splits the same way, duplicate rows always
land together, and a row's position does not depend on the batch it travels
in. Computed column by column with vectorised integer arithmetic on Arrow
arrays (numpy and pyarrow only, so any layer can use it).
"""

import hashlib
from typing import Dict, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import arrays

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
# Odd multiplier of the polynomial byte-string hash, and its inverse mod 2**64.
_POLY = 0x100000001B3 * 2 + 1
_POLY_INVERSE = pow(_POLY, -1, 1 << 64)
_powers_cache: Dict[int, np.ndarray] = {}
# Below this many values a string column is hashed directly: finding its
# distinct values first would cost more than it saves.
_DICTIONARY_MIN_VALUES = 64


def _mix(z: np.ndarray) -> np.ndarray:
  """splitmix64's finalizer, elementwise on uint64 (wrapping arithmetic)."""
  z = z ^ (z >> np.uint64(30))
  z = z * np.uint64(0xBF58476D1CE4E5B9)
  z = z ^ (z >> np.uint64(27))
  z = z * np.uint64(0x94D049BB133111EB)
  return z ^ (z >> np.uint64(31))


def _powers(base: int, n: int) -> np.ndarray:
  """base**0 .. base**(n-1) mod 2**64, cached and grown as needed."""
  cached = _powers_cache.get(base)
  if cached is None or len(cached) < n:
    size = max(n, 1 << 16, 0 if cached is None else 2 * len(cached))
    cached = np.empty(size, dtype=np.uint64)
    cached[0] = 1
    cached[1:] = base
    np.cumprod(cached, out=cached)
    _powers_cache[base] = cached
  return cached[:n]


def _binary_hashes(values: pa.Array) -> np.ndarray:
  """Polynomial hash of each byte string, independent of its buffer offset."""
  n = len(values)
  offset_type = np.int64 if pa.types.is_large_binary(
      values.type) or pa.types.is_large_string(values.type) else np.int32
  buffers = values.buffers()
  offsets = np.frombuffer(
      buffers[1],
      dtype=offset_type)[values.offset:values.offset + n + 1].astype(np.int64)
  lengths = np.diff(offsets)
  if n == 0:
    return np.zeros(0, dtype=np.uint64)
  lo, hi = int(offsets[0]), int(offsets[-1])
  data = (
      np.frombuffer(buffers[2], dtype=np.uint8)[lo:hi]
      if buffers[2] is not None and hi > lo else np.zeros(0, np.uint8))
  starts = offsets[:-1] - lo
  prefix = np.zeros(len(data) + 1, dtype=np.uint64)
  np.cumsum(data.astype(np.uint64) * _powers(_POLY, len(data)), out=prefix[1:])
  # sum of b[p] * K**p over the string, shifted down to start at K**0.
  spans = (prefix[starts + lengths] - prefix[starts]) * _powers(
      _POLY_INVERSE,
      len(data) + 1)[starts]
  return _mix(spans ^ (lengths.astype(np.uint64) * np.uint64(_GOLDEN)))


def _repeated_binary_hashes(values: pa.Array) -> np.ndarray:
  """`_binary_hashes` through a dictionary: each distinct string hashed once.

  Hashing walks every byte of every string with 64-bit arithmetic; a
  categorical column repeats a few strings over and over, and finding the
  distinct ones is a single hash-table pass in Arrow. A column that hardly
  repeats (ids, free text) is hashed directly. Null values get an arbitrary
  hash here: the caller masks them.
  """
  encoded = (
      arrays.repeated_strings(values)
      if len(values) >= _DICTIONARY_MIN_VALUES else None)
  if encoded is None:
    return _binary_hashes(values)
  distinct = encoded.dictionary
  if not len(distinct):  # every value null
    return np.zeros(len(values), dtype=np.uint64)
  indices = encoded.indices.fill_null(0).to_numpy()
  return _binary_hashes(distinct)[indices]


def _value_hashes(values: pa.Array) -> np.ndarray:
  """A uint64 hash of each value of a flat (non-list) array."""
  kind = values.type
  if arrays.is_byte_string(kind):
    out = _repeated_binary_hashes(values)
  elif pa.types.is_integer(kind):
    out = values.cast(pa.int64()).fill_null(0).to_numpy().view(np.uint64)
  elif pa.types.is_float32(kind):
    out = values.fill_null(0).to_numpy().view(np.uint32).astype(np.uint64)
  elif pa.types.is_float64(kind):
    out = values.fill_null(0).to_numpy().view(np.uint64)
  elif pa.types.is_boolean(kind):
    out = values.fill_null(False).to_numpy(zero_copy_only=False).astype(
        np.uint64)
  else:
    out = np.array([
        int.from_bytes(
            hashlib.blake2b(repr(v).encode('utf-8'), digest_size=8).digest(),
            'little') for v in values.to_pylist()
    ],
                   dtype=np.uint64)
  out = _mix(out + np.uint64(_GOLDEN))
  if values.null_count:
    valid = np.asarray(values.is_valid())
    out = np.where(valid, out, np.uint64(_GOLDEN))
  return out


def column_hashes(column: pa.Array) -> np.ndarray:
  """A uint64 hash of each row's value list (null, empty and [v] all differ)."""
  if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
    return _value_hashes(column)
  n = len(column)
  lengths = pc.list_value_length(column).fill_null(-1).to_numpy().astype(
      np.int64)
  values = column.flatten()
  element = _value_hashes(values)
  sums = np.zeros(n, dtype=np.uint64)
  if len(values):
    if len(values) == int((lengths == 1).sum()):
      # At most one value per row (what the cleanse stage produces).
      sums[lengths == 1] = element
    else:
      parents = pc.list_parent_indices(column).to_numpy()
      first = np.cumsum(np.maximum(lengths, 0)) - np.maximum(lengths, 0)
      index = np.arange(len(values), dtype=np.int64) - first[parents]
      np.add.at(sums, parents,
                _mix(element + index.astype(np.uint64) * np.uint64(_GOLDEN)))
  return _mix(sums ^ _mix(lengths.view(np.uint64)))


def row_positions(batch: pa.RecordBatch, seed: int,
                  skip: Sequence[str] = ()) -> np.ndarray:
  """Hash position in [0, 1) of each row, from its values and the seed.

  Columns named in `skip` (derived window columns: functions of other rows)
  are left out, so adding a window to a config does not move any row to
  another split.

  A keyed hash of every column's value list (the column's position in the
  batch included), computed column by column with vectorised integer
  arithmetic: the position of a row depends on its values and the seed only,
  never on the batch it travels in.
  """
  digest = hashlib.blake2b(
      seed.to_bytes(8, 'little', signed=False),
      digest_size=16,
      person=b'row-position').digest()
  state = np.full(
      batch.num_rows, int.from_bytes(digest[:8], 'little'), dtype=np.uint64)
  column_key = int.from_bytes(digest[8:], 'little')
  for i in range(batch.num_columns):
    if skip and batch.schema.names[i] in skip:
      continue
    key = np.uint64((column_key + i * _GOLDEN) & _MASK64)
    state = _mix((state ^ key) * np.uint64(_POLY) +
                 column_hashes(batch.column(i)))
  # The top 53 bits: exactly representable, so always < 1.
  return (state >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
