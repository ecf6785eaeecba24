"""Start-up of the commands without library noise, real messages kept.

Importing TensorFlow, TFDV and Apache Beam prints lines that say nothing
about the run: CUDA plugin registration errors on a machine without a GPU,
TFDV's notice that IPython is missing, Google client libraries'
FutureWarnings about Python and grpcio versions. During a tf.Transform
analysis every analyzer logs that its "cache key varies on repeated
tracing", which tf.Transform itself calls safe for a preprocessing_fn that
calls its analyzers in a deterministic order (ours does; an order that
really varies is an error tf.Transform raises).

`tensorflow_startup()` is entered around a command's heavy imports. It sets
what TensorFlow reads on import (Keras 2 through tf_keras, as tf.Transform
sets it anyway, so TensorFlow does not first import Keras 3 and matplotlib),
filters exactly those messages and nothing else: the native library lines by
their text, the warnings by category and message, the log record by its
message. Any other line printed while importing is passed on unchanged.

Cheap to import: nothing here imports TensorFlow, Beam or TFDV.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile
from typing import Iterator
import warnings

# Lines that TensorFlow's and TFDV's imports print, none about the run.
_IMPORT_NOISE = re.compile(
    r'Unable to register cu(FFT|DNN|BLAS) factory: Attempting to register'
    r'|Could not find cuda drivers on your machine, GPU will not be used'
    r'|TF-TRT Warning: Could not find TensorRT'
    r'|oneDNN custom operations are on'
    r'|This TensorFlow binary is optimized to use available CPU instructions'
    r'|^To enable the following instructions: .* rebuild TensorFlow'
    r'|^Unable to import IPython: '
    r'|^TFDV visualization APIs will not function'
    r'|^\s*$')

_FUTURE_WARNINGS = (
    r'grpcio < [0-9.]+ does not support Post-Quantum Cryptography',
    r'You are using a Python version \([0-9.]+\) which Google will stop '
    r'supporting',
)

_TFT_CACHE_KEY = "node's cache key varies on repeated tracing"


class _DropTftCacheKeyWarning(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return _TFT_CACHE_KEY not in str(record.msg)


def set_environment() -> None:
  """What TensorFlow reads when it is imported; explicit settings win."""
  os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')


def install_filters() -> None:
  """The warning and log filters; idempotent."""
  for message in _FUTURE_WARNINGS:
    warnings.filterwarnings('ignore', message=message, category=FutureWarning)
  # tf.Transform logs through absl, whose records are made by this logger
  # (a logger's filters see the records made by that logger).
  absl_logger = logging.getLogger('absl')
  if not any(
      isinstance(f, _DropTftCacheKeyWarning) for f in absl_logger.filters):
    absl_logger.addFilter(_DropTftCacheKeyWarning())


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
  """Holds what is written to file descriptor 2 (Python's and native
    libraries' stderr) and passes it on at the end, minus the known noise."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):
    yield  # no real file descriptor 2 (an embedding host): nothing to filter
    return
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    finally:
      try:
        sys.stderr.flush()
      except (OSError, ValueError):
        pass
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      kept = [
          line for line in held.read().decode('utf-8', 'replace').splitlines(
              keepends=True) if not _IMPORT_NOISE.search(line)
      ]
      if kept:
        sys.stderr.write(''.join(kept))
        sys.stderr.flush()


@contextlib.contextmanager
def tensorflow_startup() -> Iterator[None]:
  """Around a command's imports of TensorFlow, TFDV, tf.Transform, Beam.

  Also for commands that never build a model (the server, trainer.predict):
  without TF_USE_LEGACY_KERAS, importing TensorFlow imports Keras 3 (about
  0.7 s more), while with it tf_keras is only imported when used.
  """
  set_environment()
  install_filters()
  with native_stderr_filtered():
    yield
