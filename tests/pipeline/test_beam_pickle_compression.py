"""Beam's picklers compress each distinct pickle once, to the same bytes."""

import bz2

import apache_beam as beam
from apache_beam.internal import cloudpickle_pickler
from apache_beam.internal import dill_pickler
from apache_beam.internal import pickler
import pytest

from pipeline import beam_pickle_compression
from pipeline.beam_pickle_compression import RememberingBz2

beam_pickle_compression.install()

_PICKLERS = (cloudpickle_pickler, dill_pickler)


class _Scale(beam.DoFn):

  def __init__(self, factor):
    self.factor = factor

  def process(self, element):
    yield element * self.factor


_VALUES = [
    None,
    _Scale(3),
    lambda x: x + 1,
    {
        'rows': list(range(5000)),
        'name': 'census'
    },
    b'\x00' * 100,
]


@pytest.fixture(name='counted')
def _counted(monkeypatch):
  """A fresh remembering bz2 in both picklers; counts bz2's own calls."""
  calls = {'compress': 0, 'decompress': 0}
  compress, decompress = bz2.compress, bz2.decompress

  def counting_compress(data, compresslevel=9):
    calls['compress'] += 1
    return compress(data, compresslevel)

  def counting_decompress(data):
    calls['decompress'] += 1
    return decompress(data)

  monkeypatch.setattr(bz2, 'compress', counting_compress)
  monkeypatch.setattr(bz2, 'decompress', counting_decompress)
  remembering = RememberingBz2()
  for module in _PICKLERS:
    monkeypatch.setattr(module, 'bz2', remembering)
  return calls, remembering


def test_installed_in_both_picklers_and_idempotent():
  for module in _PICKLERS:
    assert module.bz2 is beam_pickle_compression.REMEMBERING
  beam_pickle_compression.install()
  for module in _PICKLERS:
    assert module.bz2 is beam_pickle_compression.REMEMBERING


@pytest.mark.parametrize('module', _PICKLERS, ids=['cloudpickle', 'dill'])
def test_same_pickles_as_beam(module, monkeypatch):
  remembered = [module.dumps(v) for v in _VALUES for _ in range(2)]
  monkeypatch.setattr(module, 'bz2', bz2)
  beams = [module.dumps(v) for v in _VALUES for _ in range(2)]
  assert remembered == beams
  monkeypatch.undo()
  assert module.bz2 is beam_pickle_compression.REMEMBERING
  for encoded in beams:
    module.loads(encoded)  # read back through the remembering bz2


def test_each_distinct_pickle_compressed_and_read_once(counted):
  calls, remembering = counted
  for _ in range(3):
    encoded = [pickler.dumps(v) for v in _VALUES]
  assert calls['compress'] == len(_VALUES)
  for _ in range(3):
    loaded = [pickler.loads(e) for e in encoded]
  assert calls['decompress'] == len(_VALUES)
  # Every load is a new object, as Beam's own is.
  assert loaded[1] is not pickler.loads(encoded[1])
  assert loaded[1].factor == 3 and loaded[3]['rows'][-1] == 4999
  assert len(remembering.compressed) == len(_VALUES)


def test_large_inputs_are_not_remembered(counted, monkeypatch):
  calls, remembering = counted
  monkeypatch.setattr(beam_pickle_compression, 'MAX_REMEMBERED_INPUT', 1000)
  big = list(range(10000))
  first = pickler.dumps(big)
  assert pickler.dumps(big) == first
  assert calls['compress'] == 2 and len(remembering.compressed) == 0
  assert pickler.loads(first) == big


def test_least_recently_used_forgotten_past_the_byte_limit():
  remembering = RememberingBz2(max_bytes=3000)
  inputs = [bytes([i]) * 1000 for i in range(5)]
  results = [remembering.compress(data) for data in inputs]
  assert results == [bz2.compress(data, 9) for data in inputs]
  # 1,000 bytes of input each plus the result: two fit, the oldest go.
  assert len(remembering.compressed) == 2
  assert remembering.compressed.get((inputs[0], 9)) is None
  assert remembering.compressed.get((inputs[4], 9)) == results[4]
  assert [remembering.decompress(r) for r in results] == inputs
