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

Files rotate by size with logging.handlers.RotatingFileHandler's names (FILE,
FILE.1, ... FILE.N, the highest the oldest), and a request's lines are
never split across files. The event loop only queues what it served (the
time, the rows as received and the signature's output arrays); a background
thread turns that into JSON lines and writes them. The thread wakes up once
per WRITE_INTERVAL, not once per request, and writes what has gathered:
Python runs one thread at a time, and a thread woken for every request
competed with the event loop for it (at 32 concurrent one-row gRPC calls on
2 cores, the writer used 0.14 of a core). So neither the encoding, nor the
writer's wake-ups, nor a slow disk holds up requests; a line reaches the
file within about WRITE_INTERVAL of its answer. close() writes everything
queued and flushes, which is what graceful shutdown calls. A write error (a
full disk) is reported on stderr (the 'serving' logger) and does not stop
serving.
"""

import datetime
import json
import logging
import os
import queue
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from core.layout import ExportDir
from serving.outputs import json_column

log = logging.getLogger('serving')

WRITE_INTERVAL = 0.05  # seconds between the writer's wake-ups

# What the loop queues per request: time.time(), version, rows, outputs.
_Entry = Tuple[float, int, Sequence[Dict[str, Any]], Mapping[str, np.ndarray]]
_STOP = None  # queued by close(): write what is queued, then end
_ENCODER = json.JSONEncoder(ensure_ascii=False)


def log_prediction(columns: Dict[str, List[Any]], i: int) -> Dict[str, Any]:
  """The request log's "prediction": {"probability": p, "class": c} for a
  binary classifier (one probability per row); any other output under its
  own name."""
  prediction: Dict[str, Any] = {}
  for name, column in columns.items():
    value = column[i]
    if name == ExportDir.PROBABILITIES:
      if isinstance(value, list) and len(value) == 1:
        prediction['probability'] = value[0]
      else:
        prediction['probabilities'] = value
    elif name == ExportDir.CLASSES:
      prediction['class'] = value
    elif name == ExportDir.PREDICTIONS and isinstance(value,
                                                      list) and len(value) == 1:
      prediction['prediction'] = value[0]
    else:
      prediction[name] = value
  return prediction


def log_lines(entry: _Entry) -> str:
  """One request's JSON lines, one per instance, each ending in a newline."""
  served, model_version, features, outputs = entry
  now = datetime.datetime.fromtimestamp(
      served, datetime.timezone.utc).isoformat(timespec='milliseconds')
  columns = {name: json_column(value) for name, value in outputs.items()}
  return ''.join(
      _ENCODER.encode({
          'time': now,
          'model_version': model_version,
          'features': row,
          'prediction': log_prediction(columns, i)
      }) + '\n' for i, row in enumerate(features))


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
    self.max_bytes = max_bytes
    self.backups = backups
    self._file = open(path, 'a', encoding='utf-8')
    self._queue: 'queue.SimpleQueue[Optional[_Entry]]' = queue.SimpleQueue()
    self._closed = False
    self._writer = threading.Thread(
        target=self._write_queued, name='request-log', daemon=True)
    self._writer.start()

  def write(self, model_version: int, features: Sequence[Dict[str, Any]],
            outputs: Mapping[str, np.ndarray]) -> None:
    """Queues one request's lines: `features` as the client sent them and
    the signature's `outputs` for them (first axis = rows); returns at
    once. The arrays must not change afterwards."""
    if self._closed or not features:
      return
    self._queue.put((time.time(), model_version, features, outputs))

  def _write_queued(self) -> None:
    """The writer thread: every WRITE_INTERVAL, what has been queued, then
    one flush."""
    stopping = False
    while not stopping:
      entries = [self._queue.get()]  # sleeps while nothing is served
      if entries[0] is not _STOP:
        time.sleep(WRITE_INTERVAL)  # let the requests of a while gather
      while True:
        try:
          entries.append(self._queue.get_nowait())
        except queue.Empty:
          break
      for entry in entries:
        if entry is _STOP:
          stopping = True  # still write what was queued around it
          continue
        try:
          self._append(log_lines(entry))
        except Exception:  # one bad entry loses only itself
          log.exception('request log: cannot write a request')
      try:
        self._file.flush()
      except OSError:
        log.exception('request log: cannot flush')

  def _append(self, text: str) -> None:
    """One request's lines, after a rotation if they would take the file
    over max_bytes (RotatingFileHandler's rule, counted in bytes)."""
    size = len(text.encode('utf-8'))
    used = self._file.tell()
    if self.max_bytes > 0 and used > 0 and used + size > self.max_bytes:
      self._rotate()
    self._file.write(text)

  def _rotate(self) -> None:
    """FILE -> FILE.1 -> FILE.2 ... -> FILE.<backups>, the oldest dropped."""
    self._file.close()
    try:
      for i in range(self.backups - 1, 0, -1):
        if os.path.exists(f'{self.path}.{i}'):
          os.replace(f'{self.path}.{i}', f'{self.path}.{i + 1}')
      os.replace(self.path, f'{self.path}.1')
    finally:  # a failed rename leaves FILE growing, not closed
      self._file = open(self.path, 'a', encoding='utf-8')

  def close(self) -> None:
    """Writes everything queued, flushes and closes the file."""
    if self._closed:
      return
    self._closed = True
    self._queue.put(_STOP)
    self._writer.join()
    self._file.close()
