"""Loading export versions, and swapping in a newer one without a restart.

The model directory follows TF Serving's layout (MDIR/export/<integer
version>/), and so does the policy: the highest version is served. A poller
(on the event loop, doing its file-system work and the loading in a thread of
its own) notices a new version, loads it, runs one warm-up prediction through
each signature, and only then makes it current, with one assignment. Requests
read `ModelStore.current` once when they start and keep that LoadedModel
until they finish, so a swap never changes the model under a request in
flight; the old version is freed when its last request lets go of it.

A version directory copied in place by hand can be seen half-written: a
version is loaded only once its files (names and sizes) have looked the same
on two consecutive polls, and a version that fails to load is not retried
until its files change. Either way the current model keeps serving.

Once a version is current, everything alive is frozen out of Python's cyclic
garbage collector (core.heap.settle): a loaded model is about half
a million long-lived objects, which every full collection would otherwise
walk with the event loop stopped (on UCI Adult's model, 300 ms every 20-30 s
under load: wrk's p99 260-310 ms for 32 REST callers instead of 16 ms;
frozen, a full collection takes 1-7 ms). A version still held by a request
in flight at the swap is frozen with the rest and freed at the next swap.
"""

import asyncio
import concurrent.futures
import logging
import os
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from google.protobuf import json_format
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from core import heap
from core.errors import InputError
from core.layout import ExportDir
from core.layout import versions_in
from serving import request_checks

log = logging.getLogger('serving')

# Signatures the server can call, and how they take a batch of rows.
RAW = ExportDir.RAW_SIGNATURE  # one [N] tensor per raw feature
EXAMPLES = ExportDir.DEFAULT_SIGNATURE  # serialized tf.Examples
_INTERNAL_SIGNATURES = ('__saved_model_init_op',)


def _signature_defs(export_dir: str) -> Dict[str, Any]:
  """The SignatureDefs as TF Serving's metadata API prints them."""
  proto = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(os.path.join(export_dir, ExportDir.SAVED_MODEL),
                         'rb') as f:
    proto.ParseFromString(f.read())
  defs = proto.meta_graphs[0].signature_def
  return {
      name:
          json_format.MessageToDict(
              defs[name],
              preserving_proto_field_name=True,
              including_default_value_fields=True)
      for name in sorted(defs)
      if name not in _INTERNAL_SIGNATURES
  }


Outputs = Dict[str, np.ndarray]  # output name -> array, first axis = rows


class LoadedModel:
  """One loaded export version: its signatures, config and request schema."""

  def __init__(self, export_dir: str, version: int):
    self.export_dir = export_dir
    self.version = version
    self.config = ExportDir(export_dir).config
    self.schema = request_checks.RowSchema(self.config)
    label = self.config.label
    self.classes: List[str] = list(label.classes)
    self.positive: Optional[str] = label.positive
    self.signature_defs = _signature_defs(export_dir)
    self._saved = tf.saved_model.load(export_dir)
    self._signatures = {
        RAW: self._saved.signatures[RAW],
        EXAMPLES: self._saved.signatures[EXAMPLES]
    }
    self._int_features = [n for n, k in self.schema.kinds.items() if k == 'int']
    # serving_raw takes one value per row and feature: a list column can
    # only be sent as tf.Examples.
    self._examples_only = bool(self.schema.lists)

  @property
  def signature_names(self) -> List[str]:
    return sorted(self._signatures)

  # --------------------------------------------------------------- predict

  def predict(self, rows: Sequence[Dict[str, Any]], signature: str) -> Outputs:
    """The signature's outputs for the rows, in order. Runs TensorFlow: call
    it from a worker thread, never on the event loop.

    serving_raw cannot express a missing int (its int64 tensors have no
    missing value, and 0 is a real value), so rows with a null int feature go
    through serving_default as tf.Examples that leave the feature out, which
    is exactly how a missing value reaches the transform graph in training.
    A null float is NaN and a null string '' in serving_raw; the graph treats
    both exactly like an absent value.
    """
    if signature == EXAMPLES or self._examples_only:
      return self._call_examples(rows)
    need_examples = [
        i for i, r in enumerate(rows)
        if any(r[n] is None for n in self._int_features)
    ]
    if not need_examples:
      return self._call_raw(rows)
    if len(need_examples) == len(rows):
      return self._call_examples(rows)
    chosen = set(need_examples)
    raw_idx = [i for i in range(len(rows)) if i not in chosen]
    from_raw = self._call_raw([rows[i] for i in raw_idx])
    from_examples = self._call_examples([rows[i] for i in need_examples])
    merged = {}
    for name, part in from_raw.items():
      full = np.empty((len(rows),) + part.shape[1:], dtype=part.dtype)
      full[raw_idx] = part
      full[need_examples] = from_examples[name]
      merged[name] = full
    return merged

  def _call_raw(self, rows: Sequence[Dict[str, Any]]) -> Outputs:
    return self._outputs(self._signatures[RAW](**self.raw_inputs(rows)))

  def raw_inputs(self, rows: Sequence[Dict[str, Any]]) -> Dict[str, tf.Tensor]:
    """serving_raw's input tensors for rows without a null int: NaN for a
    null float, '' for a null string (what the signature reads as missing)."""
    inputs = {}
    for name, kind in self.schema.kinds.items():
      column = [r[name] for r in rows]
      if kind == 'int':
        inputs[name] = tf.constant(np.array(column, dtype=np.int64))
      elif kind == 'float':
        inputs[name] = tf.constant(
            np.array([np.nan if v is None else v for v in column],
                     dtype=np.float32))
      else:
        inputs[name] = tf.constant(
            [b'' if v is None else v.encode('utf-8') for v in column],
            dtype=tf.string)
    return inputs

  def encode_example(self, row: Dict[str, Any]) -> bytes:
    """A raw tf.Example of one row; a missing value is left out."""
    example = tf.train.Example()
    feature = example.features.feature
    for name, kind in self.schema.kinds.items():
      value = row[name]
      if value is None:
        continue
      if isinstance(value, list):  # a list column; [] is left out
        feature[name].bytes_list.value.extend(v.encode('utf-8') for v in value)
      elif kind == 'int':
        feature[name].int64_list.value.append(value)
      elif kind == 'float':
        feature[name].float_list.value.append(value)
      else:
        feature[name].bytes_list.value.append(value.encode('utf-8'))
    return example.SerializeToString()

  def _call_examples(self, rows: Sequence[Dict[str, Any]]) -> Outputs:
    serialized = tf.constant([self.encode_example(r) for r in rows],
                             dtype=tf.string)
    return self._outputs(self._signatures[EXAMPLES](**{
        ExportDir.EXAMPLES_INPUT: serialized
    }))

  @staticmethod
  def _outputs(out: Mapping[str, Any]) -> Outputs:
    return {name: tensor.numpy() for name, tensor in out.items()}

  def warm_up(self) -> None:
    """One call per signature (and the mixed path), so the first real request
    does not pay for it, and a model that cannot predict is never swapped
    in."""
    row = {name: None for name in self.schema.names}
    typed: Dict[str, Any] = {
        name: (0 if k == 'int' else 0.0 if k == 'float' else '')
        for name, k in self.schema.kinds.items()
    }
    typed.update({name: ['x'] for name in self.schema.lists})
    for signature in (RAW, EXAMPLES):
      outputs = self.predict([typed, row], signature)
      for name, value in outputs.items():
        if len(value) != 2:
          raise RuntimeError(f'{signature} output {name} has {len(value)} '
                             'rows for 2 inputs')


def _fingerprint(path: str) -> Tuple[Tuple[str, int], ...]:
  """(relative path, size) of every file under a version directory."""
  files = []
  for root, _, names in tf.io.gfile.walk(path):
    for name in names:
      full = os.path.join(root, name)
      try:
        size = tf.io.gfile.stat(full).length
      except tf.errors.NotFoundError:
        size = -1
      files.append((os.path.relpath(full, path), size))
  return tuple(sorted(files))


class ModelStore:
  """The model being served, and the poller that replaces it.

  `base_path` is a TF Serving model base path: a directory of integer
  version directories, each a SavedModel (trainer.task's MDIR/export/).
  """

  def __init__(self, base_path: str, poll_seconds: float = 2.0):
    self.base_path = base_path
    self.poll_seconds = poll_seconds
    self.current: Optional[LoadedModel] = None
    self.loading: Optional[int] = None
    self._failed: Dict[int, Tuple[Any, str]] = {}  # version -> (files, error)
    self._seen: Dict[int, Any] = {}  # version -> files at the last poll
    self._served_files: Dict[int, Any] = {}  # version -> files when loaded
    self._lock = threading.Lock()  # one poll at a time
    self._loader = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix='model-loader')
    self._task: Optional[asyncio.Task] = None

  def _version_dir(self, version: int) -> str:
    return os.path.join(self.base_path, str(version))

  def load_initial(self) -> LoadedModel:
    """The newest version, loaded now (start-up); InputError if none."""
    versions = versions_in(self.base_path)
    if not versions:
      raise InputError(f'no model version in {self.base_path}: expected '
                       f'{os.path.join(self.base_path, "<version>")}/'
                       f'{ExportDir.SAVED_MODEL}')
    version = versions[-1]
    export = ExportDir(self._version_dir(version))
    if not export.exists():
      raise InputError(f'{export.path} has no {ExportDir.SAVED_MODEL}')
    model = LoadedModel(export.path, version)
    model.warm_up()
    self._served_files[version] = _fingerprint(export.path)
    self.current = model
    heap.settle()
    return model

  def poll_once(self) -> Optional[LoadedModel]:
    """Checks the export directory; loads and swaps in a newer version.

    Blocking (file system and TensorFlow): runs in the loader thread.
    Returns the new model when one was swapped in.
    """
    with self._lock:
      try:
        versions = versions_in(self.base_path)
      except Exception as e:  # noqa: BLE001 - keep serving; try next poll
        log.warning('cannot list %s: %s', self.base_path, e)
        return None
      present = set(versions)
      for gone in [v for v in self._failed if v not in present]:
        del self._failed[gone]
      if not versions:
        return None
      target = versions[-1]
      current = self.current
      if current is not None and target == current.version:
        return None
      path = self._version_dir(target)
      files = _fingerprint(path)
      previous = self._seen.get(target)
      self._seen = {target: files}
      # A version lower than the served one is a rollback (the served one was
      # taken out), and one served before with these very files is coming
      # back (trainer.rollback --to): either is loaded on this poll, without
      # waiting for its files to look the same twice. Were it incomplete,
      # its load fails and the served version stays.
      rollback = current is not None and target < current.version
      returning = self._served_files.get(target) == files
      if not any(f == ExportDir.SAVED_MODEL for f, _ in files) or (
          files != previous and not rollback and not returning):
        return None  # new or still being written: look again next poll
      failed = self._failed.get(target)
      if failed is not None and failed[0] == files:
        return None  # failed before, unchanged since
      self.loading = target
      try:
        model = LoadedModel(path, target)
        model.warm_up()
      except Exception as e:  # noqa: BLE001 - a bad version: keep the old
        message = str(e) or type(e).__name__
        self._failed[target] = (files, message.splitlines()[0][:500])
        log.error('version %d in %s failed to load; still serving %s: %s',
                  target, self.base_path, current.version if current else None,
                  message)
        return None
      finally:
        self.loading = None
      self._failed.pop(target, None)
      self._served_files[target] = files
      self.current = model
      log.warning('now serving version %d (was %s)', target,
                  current.version if current else None)
      current = None  # this poll's reference to the replaced version
      heap.settle()
      return model

  async def _poll_forever(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      await asyncio.sleep(self.poll_seconds)
      try:
        await loop.run_in_executor(self._loader, self.poll_once)
      except Exception:  # pylint: disable=broad-except
        log.exception('polling %s failed', self.base_path)

  def start_polling(self) -> None:
    if self.poll_seconds > 0 and self._task is None:
      self._task = asyncio.get_running_loop().create_task(self._poll_forever())

  async def stop(self) -> None:
    if self._task is not None:
      self._task.cancel()
      try:
        await self._task
      except asyncio.CancelledError:
        pass
      self._task = None
    self._loader.shutdown(wait=True)

  # ---------------------------------------------------------------- status

  def status(self, version: Optional[int] = None) -> List[Dict[str, Any]]:
    """model_version_status entries, TF Serving's GetModelStatusResponse."""
    entries = []
    current = self.current
    if current is not None:
      entries.append(_status_entry(current.version, 'AVAILABLE'))
    loading = self.loading
    if loading is not None:
      entries.append(_status_entry(loading, 'LOADING'))
    for v, (_, error) in sorted(self._failed.items()):
      if v != loading:  # changed since it failed, and being loaded again
        entries.append(_status_entry(v, 'END', 'UNKNOWN', error))
    if version is not None:
      entries = [e for e in entries if e['version'] == str(version)]
    return entries


def _status_entry(version: int,
                  state: str,
                  code: str = 'OK',
                  message: str = '') -> Dict[str, Any]:
  return {
      'version': str(version),
      'state': state,
      'status': {
          'error_code': code,
          'error_message': message
      }
  }
