"""What the REST and gRPC tests share: the exported model called in-process
(the reference both APIs must agree with), and per test module its own copy
of the toy model, a reference on it and a server over it (with a request
log), stopped by its own PID when the module is done."""

import math
import os
import shutil

import pytest

from core import quiet
from core.layout import ExportDir
from core.layout import ModelDir
from tests.serving_client import Server

# As the commands do (core/quiet.py): when a run names this folder's files,
# this file is imported before pytest captures anything per test, and the
# lines TensorFlow's import prints would reach the terminal at the end.
with quiet.tensorflow_startup():
  import tensorflow as tf

MAX_INSTANCES = 60
MAX_BODY = 64 * 1024


class InProcess:
  """The exported SavedModel called directly, the reference for REST."""

  def __init__(self, export_dir):
    self.config = ExportDir(export_dir).config
    self.kinds = {c.name: c.type for c in self.config.feature_columns}
    self.model = tf.saved_model.load(export_dir)

  def example(self, row):
    ex = tf.train.Example()
    for name, value in row.items():
      if value is None:
        continue
      f = ex.features.feature[name]
      if self.kinds[name] == 'int':
        f.int64_list.value.append(value)
      elif self.kinds[name] == 'float':
        f.float_list.value.append(value)
      else:
        f.bytes_list.value.append(value.encode())
    return ex.SerializeToString()

  def via_examples(self, rows):
    out = self.model.signatures[ExportDir.DEFAULT_SIGNATURE](
        examples=tf.constant([self.example(r) for r in rows]))
    return (out['probabilities'].numpy().reshape(-1),
            [c.decode() for c in out['classes'].numpy()])

  def via_raw(self, rows):
    """serving_raw; only for rows without a null int (it has no encoding
    for one)."""
    inputs = {}
    for name, kind in self.kinds.items():
      col = [r[name] for r in rows]
      if kind == 'int':
        assert None not in col
        inputs[name] = tf.constant(col, tf.int64)
      elif kind == 'float':
        inputs[name] = tf.constant([math.nan if v is None else v for v in col],
                                   tf.float32)
      else:
        inputs[name] = tf.constant(['' if v is None else v for v in col])
    out = self.model.signatures[ExportDir.RAW_SIGNATURE](**inputs)
    return (out['probabilities'].numpy().reshape(-1),
            [c.decode() for c in out['classes'].numpy()])


@pytest.fixture(scope='module')
def model_copy(trainer_toy_model, tmp_path_factory):
  """A private copy of the toy model dir: (model dir, its only version)."""
  model_dir, _ = trainer_toy_model
  version = ModelDir(model_dir).versions()[-1]
  copy = str(tmp_path_factory.mktemp('serving') / 'model')
  shutil.copytree(
      os.path.join(model_dir, ModelDir.EXPORT_DIR, str(version)),
      os.path.join(copy, ModelDir.EXPORT_DIR, str(version)))
  return copy, version


@pytest.fixture(scope='module')
def reference(model_copy):
  model_dir, version = model_copy
  return InProcess(os.path.join(model_dir, ModelDir.EXPORT_DIR, str(version)))


@pytest.fixture(scope='module')
def server(model_copy, tmp_path_factory):
  model_dir, _ = model_copy
  work = str(tmp_path_factory.mktemp('server'))
  s = Server(model_dir, work, '--request-log',
             os.path.join(work, 'requests.jsonl'), '--poll-seconds', '0.3',
             '--max-instances', str(MAX_INSTANCES), '--max-body-bytes',
             str(MAX_BODY))
  s.log_path = os.path.join(work, 'requests.jsonl')
  yield s
  s.stop()
