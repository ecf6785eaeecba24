"""Micro-batching: concurrent requests share one signature call.

A signature call has a fixed cost (about a millisecond on a laptop core for
the wide & deep model) that barely grows with the batch, so 32 one-row
requests are far cheaper as one 32-row call than as 32 calls. The batching
here adds no waiting: a request is dispatched at once when a worker thread
is free; only while every worker is busy do arriving requests queue up, and
the next free worker takes everything queued (up to `max_batch_rows`) in one
call. At low load that is one call per request with no added latency; under
load the batch grows by itself to what the workers can absorb.

TensorFlow runs in a thread pool, never on the event loop, so parsing and
answering other requests go on while the model computes. A batch holds only
requests for the same model object and signature, which is what keeps a
request on the version it started with across a hot swap. If a merged call
fails, its requests are retried one by one, so one request cannot fail the
others that happened to share its batch.
"""

import asyncio
import collections
import concurrent.futures
import dataclasses
import functools
import logging
from typing import Any, Deque, Dict, List, Sequence

import numpy as np

log = logging.getLogger('serving')

Result = Dict[str, np.ndarray]  # output name -> rows of this request


@dataclasses.dataclass
class _Item:
  model: Any
  signature: str
  rows: Sequence[Dict[str, Any]]
  future: asyncio.Future


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
    self._executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix='predict')
    self._pending: Deque[_Item] = collections.deque()
    self._running = 0
    self.calls = 0  # signature calls made (for tests and the benchmark)
    self.rows = 0

  async def predict(self, model: Any, signature: str,
                    rows: Sequence[Dict[str, Any]]) -> Result:
    loop = asyncio.get_running_loop()
    item = _Item(model, signature, rows, loop.create_future())
    self._pending.append(item)
    self._dispatch(loop)
    return await item.future

  def _take(self) -> List[_Item]:
    """The oldest request and every queued one that can share its call."""
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

  def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
    while self._running < self.workers and self._pending:
      batch = self._take()
      self._running += 1
      self.calls += 1
      self.rows += sum(len(item.rows) for item in batch)
      work = loop.run_in_executor(self._executor, self._run, batch)
      work.add_done_callback(functools.partial(self._finish, loop, batch))

  def _run(self, batch: List[_Item]) -> List[Any]:
    """Worker thread: one call for the batch, or one per item if it fails."""
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

  def _finish(self, loop: asyncio.AbstractEventLoop, batch: List[_Item],
              done: asyncio.Future) -> None:
    self._running -= 1
    try:
      results = done.result()
    except BaseException as e:  # noqa: BLE001 - every waiter gets an answer
      results = [e] * len(batch)
    for item, result in zip(batch, results):
      if item.future.done():  # the request was cancelled meanwhile
        continue
      if isinstance(result, BaseException):
        item.future.set_exception(result)
      else:
        item.future.set_result(result)
    self._dispatch(loop)

  def close(self) -> None:
    """Waits for calls in progress; nothing new may be submitted after."""
    self._executor.shutdown(wait=True)
