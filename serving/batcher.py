"""Micro-batching: concurrent requests share one signature call.

A signature call has a fixed cost (about a millisecond on a laptop core for
the wide & deep model) that barely grows with the batch, so 32 one-row
requests are far cheaper as one 32-row call than as 32 calls. The batching
here adds no waiting: a request is dispatched at once when a worker thread
is free; only while every worker is busy do arriving requests queue up, and
the next free worker takes everything queued (up to `max_batch_rows`) in one
call. At low load that is one call per request with no added latency; under
load the batch grows by itself to what the workers can absorb.

TensorFlow runs in worker threads, never on the event loop, so parsing and
answering other requests go on while the model computes. A worker that
finishes a call hands the answers to the event loop and takes the next batch
itself, from what arrived meanwhile: the next call does not wait for the
loop to get round to the previous one's answers and wake a thread (under
load, waking a thread means waiting for the GIL that the busy loop holds; at
32 concurrent one-row gRPC callers on 2 cores a pool thread woke 2.3 ms
after its call was submitted, p50, and the model was busy 53% of the time;
taking the next batch itself, 86%). A batch holds only requests for the same
model object and signature, which is what keeps a request on the version it
started with across a hot swap. If a merged call fails, its requests are
retried one by one, so one request cannot fail the others that happened to
share its batch.
"""

import asyncio
import collections
import dataclasses
import logging
import threading
from typing import Any, Deque, Dict, List, Sequence

import numpy as np

log = logging.getLogger('serving')

Result = Dict[str, np.ndarray]  # output name -> rows of this request


@dataclasses.dataclass
class _Item:
  model: Any
  signature: str
  rows: Sequence[Dict[str, Any]]
  future: asyncio.Future  # of the request's event loop


class MicroBatcher:
  """Runs model.predict(rows, signature) -> {output: array} in worker
  threads, merging requests.

  max_batch_rows=1 turns merging off (one call per request), which is what
  the benchmark compares against.
  """

  def __init__(self, workers: int = 1, max_batch_rows: int = 256):
    if workers < 1 or max_batch_rows < 1:
      raise ValueError('workers and max_batch_rows must be at least 1')
    self.workers = workers
    self.max_batch_rows = max_batch_rows
    self._pending: Deque[_Item] = collections.deque()
    self._ready = threading.Condition()  # guards _pending, _closed, counts
    self._closed = False
    self.calls = 0  # signature calls made (for tests and the benchmark)
    self.rows = 0
    self._threads = [
        threading.Thread(target=self._work, name=f'predict_{i}', daemon=True)
        for i in range(workers)
    ]
    for thread in self._threads:
      thread.start()

  async def predict(self, model: Any, signature: str,
                    rows: Sequence[Dict[str, Any]]) -> Result:
    item = _Item(model, signature, rows,
                 asyncio.get_running_loop().create_future())
    with self._ready:
      if self._closed:
        raise RuntimeError('the batcher is closed')
      self._pending.append(item)
      self._ready.notify()
    return await item.future

  def _take(self) -> List[_Item]:
    """The oldest request and every queued one that can share its call.
    Called with the lock held."""
    first = self._pending.popleft()
    batch, total = [first], len(first.rows)
    keep: Deque[_Item] = collections.deque()
    while self._pending:
      item = self._pending.popleft()
      if (item.model is first.model and item.signature == first.signature and
          total + len(item.rows) <= self.max_batch_rows):
        batch.append(item)
        total += len(item.rows)
      else:
        keep.append(item)
    self._pending = keep
    return batch

  def _work(self) -> None:
    """A worker thread: take a batch, call the model, hand the answers to
    the requests' event loop, repeat; ends once closed and drained."""
    while True:
      with self._ready:
        while not self._pending and not self._closed:
          self._ready.wait()
        if not self._pending:
          return
        batch = self._take()
        self.calls += 1
        self.rows += sum(len(item.rows) for item in batch)
      try:
        results = self._run(batch)
      except Exception as e:  # noqa: BLE001 - every waiter gets an answer
        results = [e] * len(batch)
      by_loop: Dict[asyncio.AbstractEventLoop, List[Any]] = {}
      for item, result in zip(batch, results):
        by_loop.setdefault(item.future.get_loop(), []).append(
            (item.future, result))
      for loop, answers in by_loop.items():
        try:
          loop.call_soon_threadsafe(_resolve, answers)
        except RuntimeError:  # the loop is closed: nobody is waiting
          pass

  def _run(self, batch: List[_Item]) -> List[Any]:
    """One call for the batch, or one per item if it fails."""
    model, signature = batch[0].model, batch[0].signature
    rows = [r for item in batch for r in item.rows]
    try:
      outputs = model.predict(rows, signature)
    except Exception as e:  # noqa: BLE001 - becomes the requests' error
      if len(batch) == 1:
        return [e]
      log.warning(
          'a merged call of %d requests failed (%s); retrying them '
          'one by one', len(batch), e)
      results: List[Any] = []
      for item in batch:
        try:
          results.append(model.predict(item.rows, signature))
        except Exception as e1:  # noqa: BLE001 - becomes the request's error
          results.append(e1)
      return results
    results, start = [], 0
    for item in batch:
      end = start + len(item.rows)
      results.append({name: value[start:end] for name, value in outputs.items()})
      start = end
    return results

  def close(self) -> None:
    """Finishes what is queued and the calls in progress; nothing new may
    be submitted after."""
    with self._ready:
      self._closed = True
      self._ready.notify_all()
    for thread in self._threads:
      thread.join()


def _resolve(answers: List[Any]) -> None:
  """On the event loop: each request's result or error."""
  for future, result in answers:
    if future.done():  # the request was cancelled meanwhile
      continue
    if isinstance(result, BaseException):
      future.set_exception(result)
    else:
      future.set_result(result)
