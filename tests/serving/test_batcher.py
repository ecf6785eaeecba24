"""The micro-batcher: which requests share a signature call, and that every
request gets its own rows' answer (or its own error) whatever it shared.

The model here is a plain function of the rows (TensorFlow is not needed to
see how calls are formed), with a gate that holds a call open so that the
requests arriving meanwhile queue up deterministically.
"""

import asyncio
import threading
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import pytest

from serving.batcher import MicroBatcher


class Model:
  """predict(rows, signature): 'double' = 2 * x per row; a row with x < 0
  fails the whole call, as a value the graph rejects would."""

  def __init__(self) -> None:
    self.calls: List[List[Any]] = []  # the x of each call's rows
    self.gate = threading.Event()
    self.gate.set()
    self.entered = threading.Event()

  def predict(self, rows: Sequence[Dict[str, Any]],
              signature: str) -> Dict[str, np.ndarray]:
    xs = [r['x'] for r in rows]
    self.calls.append(xs)
    self.entered.set()
    self.gate.wait(10)
    if any(x < 0 for x in xs):
      raise ValueError(f'negative x in {xs}')
    return {
        'double': np.array(xs, dtype=np.float32) * 2,
        'signature': np.array([signature] * len(xs))
    }


def rows_of(*xs: float) -> List[Dict[str, Any]]:
  return [{'x': x} for x in xs]


def held_first(batcher: MicroBatcher, model: Model, *later:
               Tuple[Model, str, List[Dict[str, Any]]]) -> List[Any]:
  """Sends one request (x=100) whose call is held open, then the `later`
  requests (model, signature, rows) while it is; releases it and returns
  every answer, or error, in order."""

  async def scenario():
    model.gate.clear()
    model.entered.clear()
    first = asyncio.ensure_future(batcher.predict(model, 'raw', rows_of(100)))
    assert await asyncio.to_thread(model.entered.wait, 10)
    rest = [asyncio.ensure_future(batcher.predict(*r)) for r in later]
    await asyncio.sleep(0.05)  # every later request is queued
    model.gate.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)

  return asyncio.run(scenario())


def test_requests_queued_during_a_call_share_the_next_one():
  model = Model()
  batcher = MicroBatcher(workers=1)

  answers = held_first(batcher, model,
                       *[(model, 'raw', rows_of(i, i + 0.5)) for i in range(5)])
  batcher.close()
  assert model.calls == [[100], [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5]]
  assert (batcher.calls, batcher.rows) == (2, 11)
  assert answers[0]['double'].tolist() == [200]
  for i, answer in enumerate(answers[1:]):
    assert answer['double'].tolist() == [2 * i, 2 * i + 1]


def test_a_request_that_fails_a_merged_call_fails_alone():
  model = Model()
  batcher = MicroBatcher()

  first, one, bad, three = held_first(batcher, model,
                                      (model, 'raw', rows_of(1)),
                                      (model, 'raw', rows_of(-1, 2)),
                                      (model, 'raw', rows_of(3)))
  batcher.close()
  assert first['double'].tolist() == [200]
  assert one['double'].tolist() == [2]
  assert isinstance(bad, ValueError) and 'negative x' in str(bad)
  assert three['double'].tolist() == [6]
  # the merged call, then each of its requests alone
  assert model.calls[1:] == [[1, -1, 2, 3], [1], [-1, 2], [3]]


def test_calls_never_mix_model_versions_or_signatures():
  old, new = Model(), Model()
  batcher = MicroBatcher()

  answers = held_first(batcher, old, (old, 'raw', rows_of(1)),
                       (new, 'raw', rows_of(2)), (old, 'examples', rows_of(3)),
                       (old, 'raw', rows_of(4)), (new, 'raw', rows_of(5)))
  batcher.close()
  assert old.calls == [[100], [1, 4], [3]]
  assert new.calls == [[2, 5]]
  assert [a['double'].tolist() for a in answers] == [[200], [2], [4], [6], [8],
                                                     [10]]
  assert answers[3]['signature'].tolist() == ['examples']


def test_a_call_takes_at_most_max_batch_rows():
  model = Model()
  batcher = MicroBatcher(max_batch_rows=3)
  answers = held_first(batcher, model,
                       *[(model, 'raw', rows_of(i, i)) for i in range(4)])
  batcher.close()
  assert model.calls == [[100], [0, 0], [1, 1], [2, 2], [3, 3]]
  assert [a['double'].tolist() for a in answers[1:]] == [[0, 0], [2, 2], [4, 4],
                                                         [6, 6]]
  with pytest.raises(ValueError, match='at least 1'):
    MicroBatcher(max_batch_rows=0)


def test_a_cancelled_request_leaves_the_others_answered():
  model = Model()
  batcher = MicroBatcher()

  async def scenario():
    model.gate.clear()
    first = asyncio.ensure_future(batcher.predict(model, 'raw', rows_of(100)))
    assert await asyncio.to_thread(model.entered.wait, 10)
    gone = asyncio.ensure_future(batcher.predict(model, 'raw', rows_of(1)))
    kept = asyncio.ensure_future(batcher.predict(model, 'raw', rows_of(2)))
    await asyncio.sleep(0.05)
    gone.cancel()
    model.gate.set()
    return await first, await kept, gone.cancelled()

  first, kept, cancelled = asyncio.run(scenario())
  batcher.close()
  assert cancelled
  assert (first['double'].tolist(), kept['double'].tolist()) == ([200], [4])


def test_close_answers_what_is_queued_then_refuses_new_requests():
  model = Model()
  batcher = MicroBatcher(workers=2)

  async def scenario():
    model.gate.clear()
    queued = [
        asyncio.ensure_future(batcher.predict(model, 'raw', rows_of(i)))
        for i in range(6)
    ]
    await asyncio.sleep(0.05)
    closing = asyncio.ensure_future(asyncio.to_thread(batcher.close))
    await asyncio.sleep(0.05)
    assert not closing.done()  # waits for the calls held open
    model.gate.set()
    answers = await asyncio.gather(*queued)
    await closing
    with pytest.raises(RuntimeError, match='closed'):
      await batcher.predict(model, 'raw', rows_of(7))
    return answers

  answers = asyncio.run(scenario())
  assert [a['double'].tolist() for a in answers] == [[2 * i] for i in range(6)]
  assert sorted(x for call in model.calls for x in call) == list(range(6))
