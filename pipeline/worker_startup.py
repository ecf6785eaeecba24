"""First import of a Beam worker process: its start-up and exit kept quiet.

The job names this module in Beam's `--beam_plugins`, which every SDK
worker imports when it starts, before it runs a bundle. A worker in a
process of its own (the DirectRunner's multi_processing mode) would
otherwise print what the commands filter (core/quiet.py) once more per
worker: TensorFlow's CUDA registration errors and TFDV's IPython notice
when the first DoFn that needs them is unpickled, and, when the process
ends, one "Exception ignored in AtomicFunction.__del__" traceback per
TensorFlow function still alive while the interpreter clears its modules
(about 100 lines per Adult job). Here the worker imports those libraries
with the same filter, and once it has finished (its result reported, any
error already printed) its interpreter's teardown writes to /dev/null.

A worker inside the launching process (the in-process DirectRunner, Flink
and Spark with LOOPBACK) has imported them already and ends with it: this
module does nothing there.
"""

import atexit
import os
import sys

from core import cli
from core import quiet

_SDK_WORKER_MAIN = 'apache_beam.runners.worker.sdk_worker_main'


def in_worker_process() -> bool:
  """Whether this process was started to run Beam's SDK worker."""
  spec = getattr(sys.modules.get('__main__'), '__spec__', None)
  return getattr(spec, 'name', None) == _SDK_WORKER_MAIN


def _silence_teardown() -> None:
  cli.flush_std_streams()
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  os.close(devnull)


if in_worker_process():
  with quiet.tensorflow_startup():
    # pylint: disable=g-import-not-at-top,unused-import
    import tensorflow  # noqa: F401
    import tensorflow_data_validation  # noqa: F401
    import tensorflow_transform  # noqa: F401
  # Exit functions run once the worker's main has returned or printed its
  # error; from this one on, what the process prints goes to /dev/null.
  atexit.register(_silence_teardown)
