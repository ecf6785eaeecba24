"""Record batches -> serialized tf.Examples, with array operations.

The write stage serializes every row of every split twice (raw and
transformed), and the bytes must not change from one run to the next, so
records are written as `SerializeToString(deterministic=True)` writes them.
tfx_bsl's C++ encoder writes the feature map in hash order, which changes
from one process to the next; re-serializing each of its records makes them
deterministic but costs a protobuf parse and a serialization per row, which
at a million rows is most of the write stage. Here the protobuf wire format
is assembled column by column with numpy and Arrow kernels instead, byte for
byte what the protobuf runtime writes (tests compare the two on random
batches), without a Python object per record until the records themselves.

Layout of one record, for reference:
  Example   = 0a <len> Features
  Features  = { 0a <len> Entry } in the runtime's map order
  Entry     = 0a <len> <key> 12 <len> Feature
  Feature   = (nothing, for a null list)
            | 0a <len> { 0a <len> <bytes> }          bytes_list
            | 12 <len> [0a <len> <4-byte floats>]     float_list (packed)
            | 1a <len> [0a <len> <varints>]           int64_list (packed)
"""

import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tensorflow.core.example import feature_pb2

_BYTES_LIST, _FLOAT_LIST, _INT64_LIST = 0x0A, 0x12, 0x1A
_EMPTY = pa.scalar(b'', pa.large_binary())
# Byte strings at most this long per row always go into a block.
_NARROW_BYTES = 64


def varint_bytes(values) -> Tuple[np.ndarray, np.ndarray]:
  """Protobuf varints of uint64 values: an (n, k) byte matrix (k the longest
  varint among them; each row left-aligned) and each value's varint length."""
  values = np.asarray(values).astype(np.uint64, copy=False)
  lengths = np.ones(len(values), dtype=np.int64)
  largest = int(values.max()) if len(values) else 0
  width = 1
  while width < 10 and largest >= 1 << (7 * width):
    lengths += values >= np.uint64(1 << (7 * width))
    width += 1
  out = np.empty((len(values), width), dtype=np.uint8)
  for k in range(width):
    byte = ((values >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
    out[:, k] = byte | ((lengths > k + 1).astype(np.uint8) << 7)
  return out, lengths


def varint(value: int) -> bytes:
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if not value:
      out.append(byte)
      return bytes(out)
    out.append(byte | 0x80)


def _read_varint(data: bytes, offset: int) -> Tuple[int, int]:
  value = shift = 0
  while True:
    byte = data[offset]
    offset += 1
    value |= (byte & 0x7F) << shift
    shift += 7
    if byte < 0x80:
      return value, offset


_key_orders: Dict[Tuple[str, ...], List[str]] = {}

# The record matrix, its mask and the gathered records, kept from one batch
# to the next by each thread. They are the largest arrays the encoder makes
# (a batch's records, padded), and made afresh for every batch they cost
# more than the encoding itself: glibc hands arrays this size back to the
# system when they are freed (pipeline.preprocess keeps it so), and every
# page of the next one faults in again. In the million-row job: 7.4-7.6 us
# a transformed record with fresh arrays, 3.7-4.1 us with these.
_scratch = threading.local()
# At most this many bytes of the record matrix gathered at once.
_GATHER_BYTES = 64 << 10


def _array(name: str, shape: Tuple[int, ...], dtype,
           transient: bool) -> np.ndarray:
  """An uninitialized array: for `transient` ones, this thread's buffer
  `name`, grown as needed (with room for batches somewhat larger than this
  one)."""
  if not transient:
    return np.empty(shape, dtype=dtype)
  size = int(np.prod(shape))
  buffer = getattr(_scratch, name, None)
  if buffer is None or len(buffer) < size:
    buffer = np.empty(size + size // 4, dtype=dtype)
    setattr(_scratch, name, buffer)
  return buffer[:size].reshape(shape)


def map_key_order(names: Sequence[str]) -> List[str]:
  """The order in which deterministic serialization writes these feature keys.

  Read back from the protobuf runtime itself (upb, for one, does not write
  plain lexicographic order), so that the encoder writes exactly the bytes
  `SerializeToString(deterministic=True)` writes.
  """
  cache_key = tuple(sorted(names))
  if cache_key not in _key_orders:
    features = feature_pb2.Features()
    for name in names:
      features.feature[name].float_list.value.append(0.0)
    data = features.SerializeToString(deterministic=True)
    order, offset = [], 0
    while offset < len(data):  # map entries: 0a <len> 0a <key len> <key> ...
      length, start = _read_varint(data, offset + 1)
      key_length, key_start = _read_varint(data, start + 1)
      order.append(data[key_start:key_start + key_length].decode('utf-8'))
      offset = start + length
    if sorted(order) != sorted(names):
      raise AssertionError(f'cannot read the map order back: {order}')
    _key_orders[cache_key] = order
  return _key_orders[cache_key]


class _Rows:
  """Byte strings built block by block, one per row.

  Each block is an (n, width) byte matrix whose rows are left-aligned, with
  the number of bytes each row uses (None: all of them); a row's bytes are
  the used bytes of its row in every block, in order.
  """

  def __init__(self, n: int, transient: bool = False):
    """`transient`: the array of byte strings made last is read before the
    next one is made on this thread (it may be built in reused buffers)."""
    self.n = n
    self._transient = transient
    self._sizes = np.zeros(n, dtype=np.int64)
    self._blocks: List[Tuple[np.ndarray, Optional[np.ndarray]]] = []
    self._parts: List[pa.Array] = []
    # Bytes every row has next, not yet a block: consecutive constants (a
    # key, its tags, lengths that are the same in every row) become one
    # block, and each block costs the final concatenation a pass over the
    # rows however narrow it is.
    self._constant = b''

  def constant(self, data: bytes) -> None:
    self._constant += data
    self._sizes += len(data)

  def _add_constant_block(self) -> None:
    if self._constant:
      self._blocks.append((np.broadcast_to(
          np.frombuffer(self._constant, dtype=np.uint8),
          (self.n, len(self._constant))), None))
      self._constant = b''

  def varint(self,
             tag: Optional[int],
             values: np.ndarray,
             present: Optional[np.ndarray] = None) -> None:
    """[tag] varint(value) per row; nothing in rows where `present` is
    False."""
    values = np.asarray(values)
    if present is None and len(values) and values.min() == values.max():
      # Often the same in every row (a number per row, one value per list).
      self.constant((b'' if tag is None else bytes([tag])) +
                    varint(int(values[0])))
      return
    self._add_constant_block()
    digits, lengths = varint_bytes(values)
    head = 0 if tag is None else 1
    block = np.empty((self.n, head + digits.shape[1]), dtype=np.uint8)
    if tag is not None:
      block[:, 0] = tag
    block[:, head:] = digits
    used = head + lengths
    if present is not None:
      used = np.where(present, used, 0)
    self._blocks.append((block, None if
                         (used == block.shape[1]).all() else used))
    self._sizes += used

  def ragged(self, array: pa.LargeBinaryArray) -> None:
    """Each row's value of `array` (a row's bytes of any length).

    Short values go into a block like any other; a column whose longest
    value is much longer than its values on average (free text) would make
    a mostly empty matrix, so the rows so far become one part and the
    column another, joined by Arrow at the end.
    """
    self._add_constant_block()
    lengths = np.diff(_offsets(array))
    data = _data(array)
    width = int(lengths.max()) if self.n else 0
    if width * self.n > max(4 * len(data), _NARROW_BYTES * self.n):
      self._parts.append(self._matrix_array(transient=False))
      self._parts.append(array)
      self._blocks, self._sizes = [], np.zeros(self.n, dtype=np.int64)
      return
    if (lengths == width).all():  # a number per row, a fixed-size string
      self._blocks.append((data.reshape(self.n, width), None))
    else:
      block = np.zeros((self.n, width), dtype=np.uint8)
      block[np.arange(width)[None, :] < lengths[:, None]] = data
      self._blocks.append((block, lengths))
    self._sizes += lengths

  def to_array(self) -> pa.LargeBinaryArray:
    self._add_constant_block()
    if not self._parts:
      return self._matrix_array(self._transient)
    parts = self._parts + ([self._matrix_array(self._transient)]
                           if self._blocks else [])
    return pc.binary_join_element_wise(*parts, _EMPTY)

  def _matrix_array(self, transient: bool) -> pa.LargeBinaryArray:
    """The rows' bytes; `transient`: in this thread's reused buffers where
    the result may alias them."""
    self._add_constant_block()
    if not self._blocks:
      return _binary_array(
          np.zeros(self.n + 1, dtype=np.int64), np.zeros(0, dtype=np.uint8))
    shape = (self.n, sum(block.shape[1] for block, _ in self._blocks))
    matrix = _array('matrix', shape, np.uint8, transient)
    np.concatenate([b for b, _ in self._blocks], axis=1, out=matrix)
    offsets = np.zeros(self.n + 1, dtype=np.int64)
    np.cumsum(self._sizes, out=offsets[1:])
    if all(used is None for _, used in self._blocks):
      return _binary_array(offsets, matrix.reshape(-1))
    mask = _array('mask', shape, np.bool_, transient)
    mask.fill(True)
    column = 0
    for block, used in self._blocks:
      if used is not None:
        mask[:, column:column + block.shape[1]] = (
            np.arange(block.shape[1])[None, :] < used[:, None])
      column += block.shape[1]
    if not transient:
      return _binary_array(offsets, matrix[mask])
    # The rows' used bytes, gathered a few rows at a time into this thread's
    # buffer: each piece is small enough to come from (and go back to) the
    # heap, where the whole gathered array at once would be a new mapping.
    data = _array('data', (int(offsets[-1]),), np.uint8, transient)
    step = max(1, _GATHER_BYTES // shape[1])
    for start in range(0, self.n, step):
      stop = min(start + step, self.n)
      data[offsets[start]:offsets[stop]] = matrix[start:stop][mask[start:stop]]
    return _binary_array(offsets, data)


def _binary_array(offsets: np.ndarray, data: np.ndarray) -> pa.LargeBinaryArray:
  return pa.LargeBinaryArray.from_buffers(
      pa.large_binary(),
      len(offsets) - 1,
      [None,
       pa.py_buffer(offsets),
       pa.py_buffer(np.ascontiguousarray(data))])


def _offsets(array: pa.LargeBinaryArray) -> np.ndarray:
  """Where each value of a large_binary array starts and ends in its data
  buffer."""
  return np.frombuffer(
      array.buffers()[1],
      dtype=np.int64)[array.offset:array.offset + len(array) + 1]


def _data(array: pa.LargeBinaryArray) -> np.ndarray:
  """The bytes of a large_binary array's values, from its first."""
  offsets = _offsets(array)
  return np.frombuffer(
      array.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]


def _list_layout(column: pa.Array):
  """(values, value offsets per row relative to `values`, null rows) of a
  list or large_list column; None for any other column."""
  kind = column.type
  if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
    return None
  offsets = column.offsets.to_numpy().astype(np.int64)
  values = column.values.slice(offsets[0], offsets[-1] - offsets[0])
  offsets = offsets - offsets[0]
  nulls = None
  if column.null_count:
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    if (np.diff(offsets)[nulls] != 0).any():
      return None  # a null list that spans values: Arrow allows it
  return values, offsets, nulls


class _Payload:
  """Each row's list payload: what the list message holds (packed floats,
  packed varints, or one length-delimited field per string), its size per
  row, and how to write it."""

  def __init__(self, tag: int, size: np.ndarray, write: Callable[['_Rows'],
                                                                 None]):
    self.tag, self.size, self.write = tag, size, write


def _payload(values: pa.Array, value_offsets: np.ndarray) -> Optional[_Payload]:
  """The payloads of one column's values; None for values tf.Example has no
  list for (or tfx_bsl's encoder does not take: strings, say).

  A row's values are adjacent in `values`, so its payload is a slice of one
  buffer holding every value's encoding in order. With at most one value per
  row (the usual tabular column) the values are written straight into the
  record instead.
  """
  if values.null_count:
    return None
  kind = values.type
  counts = np.diff(value_offsets)
  if pa.types.is_binary(kind):
    values = values.cast(pa.large_binary())
    kind = values.type
  if pa.types.is_float32(kind):
    data = values.to_numpy().astype('<f4', copy=False).view(np.uint8)
    floats = _binary_array(value_offsets * 4, data)
    return _Payload(_FLOAT_LIST, 4 * counts, lambda rows: rows.ragged(floats))
  if not (pa.types.is_int64(kind) or pa.types.is_large_binary(kind)):
    return None
  if counts.max(initial=0) <= 1:
    has = counts == 1
    present = None if has.all() else has
    if pa.types.is_int64(kind):
      numbers = np.zeros(len(counts), dtype=np.uint64)
      numbers[has] = values.to_numpy().view(np.uint64)
      return _Payload(_INT64_LIST, np.where(has, _varint_size(numbers), 0),
                      lambda rows: rows.varint(None, numbers, present))
    value_ends = _offsets(values)
    strings = _binary_array(value_ends[value_offsets] - value_ends[0],
                            _data(values))
    lengths = np.diff(_offsets(strings))

    def write_strings(rows: _Rows) -> None:
      rows.varint(0x0A, lengths, present)
      rows.ragged(strings)

    return _Payload(_BYTES_LIST,
                    np.where(has, 1 + _varint_size(lengths) + lengths, 0),
                    write_strings)
  items = _Rows(len(values))
  if pa.types.is_int64(kind):
    tag = _INT64_LIST
    items.varint(None, values.to_numpy().view(np.uint64))
  else:
    tag = _BYTES_LIST
    items.varint(0x0A, np.diff(_offsets(values)))
    items.ragged(values)
  encoded = items.to_array()
  value_ends = _offsets(encoded)
  lists = _binary_array(value_ends[value_offsets], _data(encoded))
  return _Payload(tag, np.diff(_offsets(lists)),
                  lambda rows: rows.ragged(lists))


def encode_examples(batch: pa.RecordBatch) -> Optional[List[bytes]]:
  """Serialized tf.Examples of a batch of list columns of int64, float32,
  binary or large_binary (null lists, empty lists and any number of values); None for
  any other batch.

  Byte for byte what `tf.train.Example.SerializeToString(deterministic=True)`
  writes for the Examples tfx_bsl's encoder makes of the batch: a null list
  is a feature with an empty Feature, an empty list a Feature with an empty
  list of the column's type.
  """
  n = batch.num_rows
  if n == 0 or batch.num_columns == 0:
    return None
  columns = dict(zip(batch.schema.names, batch.columns))
  if len(columns) != batch.num_columns:
    return None
  # First the sizes of every column's entry (the record's header needs
  # their sum), then the record, front to back.
  entries, total = [], np.zeros(n, dtype=np.int64)
  for name in map_key_order(list(columns)):
    layout = _list_layout(columns[name])
    if layout is None:
      return None
    values, value_offsets, nulls = layout
    payload = _payload(values, value_offsets)
    if payload is None:
      return None
    entry = _Entry(name, payload, nulls)
    entries.append(entry)
    total += 1 + _varint_size(entry.size) + entry.size
  record = _Rows(n, transient=True)
  record.varint(0x0A, total)
  for entry in entries:
    entry.write(record)
  return record.to_array().to_numpy(zero_copy_only=False).tolist()


class _Entry:
  """One column's map entries: `0a <len> 0a <key len> <key> 12 <len>`, then
  the Feature (see the module docstring)."""

  def __init__(self, name: str, payload: _Payload, nulls: Optional[np.ndarray]):
    self.payload = payload
    size = payload.size
    self.has_values = None if (size > 0).all() else size > 0
    self.present = None if nulls is None else ~nulls
    # Inside float and int64 lists the packed values are one length-delimited
    # field, absent for an empty list.
    if payload.tag == _BYTES_LIST:
      self.inner = size
    else:
      self.inner = np.where(size > 0, 1 + _varint_size(size) + size, 0)
    self.feature = 1 + _varint_size(self.inner) + self.inner
    if self.present is not None:
      self.feature = np.where(self.present, self.feature, 0)
    key = name.encode('utf-8')
    self.head = b'\x0a' + varint(len(key)) + key + b'\x12'
    self.size = len(self.head) + _varint_size(self.feature) + self.feature

  def write(self, record: '_Rows') -> None:
    record.varint(0x0A, self.size)
    record.constant(self.head)
    record.varint(None, self.feature)
    record.varint(self.payload.tag, self.inner, self.present)
    if self.payload.tag != _BYTES_LIST:
      record.varint(0x0A, self.payload.size, self.has_values)
    self.payload.write(record)


def _varint_size(values: np.ndarray) -> np.ndarray:
  """Bytes in the varint of each (non-negative) value."""
  values = np.asarray(values)
  size = np.ones(len(values), dtype=np.int64)
  for k in range(1, 10):
    above = values >= (1 << (7 * k))
    if not above.any():
      break
    size += above
  return size
