"""The request log: what serving actually saw, for the skew check.

One JSON line per served instance:

    {"time": "2026-11-23T09:30:00.123+00:00", "model_version": 1795426120,
     "features": {<the raw feature object as the client sent it>},
     "prediction": {"probability": 0.83, "class": ">50K"}}

`python -m pipeline.skew --serving-data 'requests.jsonl*'` reads exactly this
(the "features" object of each line) with the same row parser as the training
data, so the log is the serving side of the training-serving skew check.
Features are logged as received (null stays null, 3.0 stays 3.0), not as the
server normalised them: the point is to see the traffic, not our reading of
it.

Files rotate by size the way logging.handlers.RotatingFileHandler does it
(FILE, FILE.1, ... FILE.N, the highest the oldest), and a line is never split
across files. Writing happens in a background thread fed by a queue, so a slow
disk never blocks the event loop; close() drains the queue and flushes, which
is what graceful shutdown calls. A write error (a full disk) is reported on
stderr by the logging machinery and does not stop serving.
"""

import datetime
import json
import logging
import logging.handlers
import os
import queue
from typing import Any, Dict, Sequence


class RequestLog:
  """Appends served instances to FILE as JSON lines, rotated by size."""

  def __init__(self, path: str, max_bytes: int = 64 * 2**20, backups: int = 5):
    if max_bytes < 0 or backups < 0:
      raise ValueError('max_bytes and backups must not be negative')
    if max_bytes > 0 and backups < 1:
      # RotatingFileHandler does not rotate at all without a backup count.
      raise ValueError('size rotation needs at least one backup file')
    self.path = path
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    self._handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backups, encoding='utf-8')
    self._handler.setFormatter(logging.Formatter('%(message)s'))
    self._queue: 'queue.SimpleQueue[logging.LogRecord]' = queue.SimpleQueue()
    self._listener = logging.handlers.QueueListener(self._queue, self._handler)
    self._listener.start()
    self._closed = False

  def write(self, model_version: int, features: Sequence[Dict[str, Any]],
            predictions: Sequence[Dict[str, Any]]) -> None:
    """Queues one line per instance; returns at once."""
    if self._closed:
      return
    now = datetime.datetime.now(
        datetime.timezone.utc).isoformat(timespec='milliseconds')
    for row, prediction in zip(features, predictions):
      line = json.dumps(
          {
              'time': now,
              'model_version': model_version,
              'features': row,
              'prediction': prediction
          },
          ensure_ascii=False)
      self._queue.put(
          logging.makeLogRecord({
              'msg': line,
              'args': None,
              'levelno': logging.INFO
          }))

  def close(self) -> None:
    """Writes everything queued, flushes and closes the file."""
    if self._closed:
      return
    self._closed = True
    self._listener.stop()
    self._handler.close()
