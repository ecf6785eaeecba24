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
With keras=False (commands that build no model) it also imports TensorFlow
without the tf_keras import TensorFlow's own import adds. It imports the
standard library's distutils before TensorFlow does, instead of setuptools'
copy that costs a scan of every installed package's metadata, and spares
google-api-core's import (through Beam) another such scan, made only to
name a package in a notice these filters drop.
Python processes the command starts (Beam's worker processes) inherit the
two FutureWarnings' filters through PYTHONWARNINGS;
`pipeline/worker_startup.py` does the rest in a worker.

tf.Transform runs in TF1 graph mode (pipeline/preprocess.py), and its
graphs are saved and loaded with TensorFlow's TF1 APIs, which log, by
design and without consequence: that mode's notice, a deprecation of
`build_tensor_info`, one "Issue encountered when serializing tft_..." for
each of tf.Transform's Python-only graph collections and one "Expected
binary or unicode string" for each vocabulary's asset (both TensorFlow
calls "probably safe to ignore"), all twice (TensorFlow's handler and the
root's). Those records are dropped by their message, on their loggers.

`filter_runtime_noise()`, called by a command's `__main__` block, does the
same for what the C++ runtime logs later, while the command runs
(`core/stderr_relay.py`): TensorFlow's end-of-iteration notice, the TF1
session's note that MLIR's optional pass is off, and its note that a
vocabulary table's initializer had an attribute set after a session ran it
(tf.Transform's TF1 graph, which the note itself says has no effect). A
command needs no TF_CPP_MIN_LOG_LEVEL, which would hide every warning of the
runtime.

Cheap to import: nothing here imports TensorFlow, Beam or TFDV.
"""

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
import types
from typing import (
    Any,
    Callable,
    ContextManager,
    Iterator,
    Optional,
    Sequence,
    Set,
    Tuple,
)
import warnings

from core import stderr_relay

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

# What TensorFlow's C++ runtime logs while a command runs, not about the run
# (core/stderr_relay.py): the end of every tf.data iteration (other aborts of
# a rendezvous, a real error or a cancellation, still print); the TF1
# session's notice about an optional MLIR pass; a TF1 vocabulary table's
# initializer given an attribute after it ran (any other operation's still
# prints).
RUNTIME_NOISE = (r'local_rendezvous\.cc:\d+\] Local rendezvous is aborting '
                 r'with status: OUT_OF_RANGE: End of sequence$'
                 r'|mlir_graph_optimization_pass\.cc:\d+\] MLIR V1 '
                 r'optimization pass is not enabled$'
                 r"|c_api\.cc:\d+\] Operation '\{name:'[^']*/text_file_init/"
                 r"InitializeTableFromTextFileV2' .* was changed by setting "
                 r'attribute after it was run by a session\.')

_FUTURE_WARNINGS = (
    r'grpcio < [0-9.]+ does not support Post-Quantum Cryptography',
    r'You are using a Python version \([0-9.]+\) which Google will stop '
    r'supporting',
)

# The same two warnings as PYTHONWARNINGS entries (a message's literal start,
# the category, the module that warns), for the Python processes a command
# starts: a Beam worker process prints them while it imports Beam, before any
# code of the job runs. The tests' warning summary filters them too
# (tests/conftest.py).
FUTURE_WARNINGS_FILTERS = (
    'ignore:grpcio < :FutureWarning:google.auth.transport.grpc',
    'ignore:You are using a Python version :FutureWarning:'
    'google.api_core._python_version_support',
)

# Log records that say nothing about the run, by the logger that makes them:
# patterns of their message.
_LOG_NOISE = {
    # tf.Transform's, through absl.
    'absl': (
        r"node's cache key varies on repeated tracing",
        r'^Tensorflow Transform is running in tf\.compat\.v1 mode\.',
    ),
    # TensorFlow's TF1 SavedModel code, saving and loading tf.Transform's
    # graphs.
    'tensorflow': (
        r'^Issue encountered when serializing tft_',
        r'^Expected binary or unicode string, got type_url: '
        r'"type\.googleapis\.com/tensorflow\.AssetFileDef"',
        r'^From \S+: build_tensor_info \(from '
        r'tensorflow\.python\.saved_model\.utils_impl\) is deprecated ',
    ),
}

# A worker process rebuilds the job's options from a dictionary and writes
# two of Beam's own boolean options back as flags its parser does not have
# (they are spelled --no_...); it logs that it discards them, and the
# launcher prints the worker's record. Other discarded arguments still print.
_WORKER_DISCARDED = re.compile(r'Discarding unparseable args: \[([^\]]*)\]')
_WORKER_LOG_LOGGERS = ('apache_beam.runners.portability.local_job_service',
                       'root')
_BEAM_OWN_FLAGS = frozenset(
    ('--direct_runner_use_stacked_bundle', '--pipeline_type_check'))


class _DropLogNoise(logging.Filter):
  """Drops a logger's records whose message matches one of `patterns`."""

  def __init__(self, patterns: Tuple[str, ...]):
    super().__init__()
    self._noise = re.compile('|'.join(f'(?:{p})' for p in patterns))

  def filter(self, record: logging.LogRecord) -> bool:
    try:
      message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record: logging reports it
      return True
    return self._noise.search(message) is None


class _DropBeamOwnFlagsNotice(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    found = _WORKER_DISCARDED.search(record.getMessage())
    if found is None:
      return True
    flags = set(re.findall(r'--[\w-]+', found.group(1)))
    return not flags or not flags <= _BEAM_OWN_FLAGS


def set_environment() -> None:
  """What TensorFlow reads when it is imported, and what the Python
  processes a command starts read at start-up; explicit settings win."""
  os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
  entries = [e for e in os.environ.get('PYTHONWARNINGS', '').split(',') if e]
  entries += [e for e in FUTURE_WARNINGS_FILTERS if e not in entries]
  os.environ['PYTHONWARNINGS'] = ','.join(entries)


def install_filters() -> None:
  """The warning and log filters; idempotent."""
  for message in _FUTURE_WARNINGS:
    warnings.filterwarnings('ignore', message=message, category=FutureWarning)
  # A logger's filters see the records made by that logger (tf.Transform's
  # are made by absl's).
  for name, patterns in _LOG_NOISE.items():
    logger = logging.getLogger(name)
    if not any(isinstance(f, _DropLogNoise) for f in logger.filters):
      logger.addFilter(_DropLogNoise(patterns))
  # The loggers through which Beam's runners print their workers' records.
  for name in _WORKER_LOG_LOGGERS:
    logger = logging.getLogger(name)
    if not any(isinstance(f, _DropBeamOwnFlagsNotice) for f in logger.filters):
      logger.addFilter(_DropBeamOwnFlagsNotice())


# The files holding file descriptor 2 while native_stderr_filtered() runs, as
# (device, inode).
_HOLDING: Set[Tuple[int, int]] = set()


def stderr_is_held() -> bool:
  """Whether file descriptor 2 is now a file native_stderr_filtered() holds
  it in: a stop raised where the filter cannot end (between the `with`
  statement's end and the filter's own code) leaves it so, and what the stop
  prints must go elsewhere (core/cli.py)."""
  try:
    st = os.fstat(2)
  except OSError:
    return False
  return (st.st_dev, st.st_ino) in _HOLDING


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
    st = os.fstat(held.fileno())
    holding = (st.st_dev, st.st_ino)
    _HOLDING.add(holding)
    os.dup2(held.fileno(), 2)
    try:
      yield
    finally:
      # Descriptor 2 back first, before any other call: Python runs a signal
      # handler after a call returns, and a stop raised there (core/cli.py)
      # must find the command's own stderr, not the held file.
      os.dup2(saved, 2)
      os.close(saved)
      _HOLDING.discard(holding)
      try:
        sys.stderr.flush()
      except (OSError, ValueError):
        pass
      held.seek(0)
      kept = [
          line for line in held.read().decode('utf-8', 'replace').splitlines(
              keepends=True) if not _IMPORT_NOISE.search(line)
      ]
      if kept:
        sys.stderr.write(''.join(kept))
        sys.stderr.flush()


def _import_tensorflow_without_keras() -> None:
  """Imports TensorFlow without the tf_keras import its own import adds.

  TensorFlow's import ends by importing Keras' optimizers (tf_keras' with
  TF_USE_LEGACY_KERAS), so that a SavedModel holding a Keras optimizer finds
  it registered; that is most of tf_keras, about a second. An export holds no
  optimizer, and a command that only loads exports builds no Keras object:
  tf_keras is made unimportable for that one import (TensorFlow's import goes
  on without it, as it does where tf_keras is not installed), then importable
  again, so anything that asks for it later loads it as usual.
  """
  if 'tensorflow' in sys.modules or 'tf_keras' in sys.modules:
    return
  with _unimportable('tf_keras'):
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import # noqa: F401


@contextlib.contextmanager
def _unimportable(name: str) -> Iterator[None]:
  """Inside, importing `name` raises ImportError, as where it is not
    installed; after, it imports as usual. Nothing changes where it is
    imported already."""
  if name in sys.modules:
    yield
    return
  sys.modules[name] = None  # type: ignore[assignment]
  try:
    yield
  finally:
    if name in sys.modules and sys.modules[name] is None:
      del sys.modules[name]


def _import_stdlib_distutils() -> None:
  """Imports the standard library's distutils before TensorFlow asks for it.

  TensorFlow's import begins with `import distutils`. setuptools' shim
  (installed at interpreter start-up by its distutils-precedence.pth)
  answers it with setuptools' own copy, which imports pkg_resources, and
  pkg_resources reads the metadata of every installed distribution: about
  0.4 s with the venv in the page cache, over 1 s without, for a module
  TensorFlow then does not use (it looks for `distutils.sysconfig`, which
  neither copy has loaded at that point). The standard library's copy, what
  setuptools' documented SETUPTOOLS_USE_DISTUTILS=stdlib selects, takes a few
  milliseconds.

  The shim is out of the way for this one import, then back: a process that
  later imports setuptools gets what setuptools arranges. An explicit
  SETUPTOOLS_USE_DISTUTILS=local wins, and where the standard library has no
  distutils (Python 3.12 on) nothing changes.
  """
  if ('distutils' in sys.modules or
      os.environ.get('SETUPTOOLS_USE_DISTUTILS', 'stdlib') != 'stdlib'):
    return
  finder = getattr(sys.modules.get('_distutils_hack'), 'DISTUTILS_FINDER', None)
  if finder is None or finder not in sys.meta_path:
    return
  position = sys.meta_path.index(finder)
  sys.meta_path.remove(finder)
  try:
    with warnings.catch_warnings():
      # Its notice that distutils is deprecated, said on import.
      warnings.simplefilter('ignore', DeprecationWarning)
      import distutils  # pylint: disable=g-import-not-at-top,unused-import,deprecated-module # noqa: F401
  except ImportError:
    pass
  finally:
    sys.meta_path.insert(position, finder)


# google-api-core's module that checks, on import, the Python version's
# support dates (google-api-core==2.30.3, through Beam's GCS filesystem).
_PYTHON_VERSION_SUPPORT = 'google.api_core._python_version_support'


def _top_level_names_only(module: types.ModuleType) -> None:
  """Skips the scan of every installed distribution for a dotted name.

  Once a Python version is within a year of its end of life (3.11 from
  2026-10-24), google-api-core's import says so in a FutureWarning (dropped
  by this module's filters) naming the package by its distribution, which it
  looks up in `importlib.metadata.packages_distributions()`: the metadata of
  every installed distribution read and parsed, about 0.25 s in every
  command, more with the venv out of the page cache. The name it looks up is
  dotted ("google.api_core"), and that mapping is keyed by top-level import
  names ("google"), so the answer is always None. It is given without the
  scan for a dotted name; any other name is looked up as before.
  """
  look_up = getattr(module, '_get_pypi_package_name', None)
  if look_up is None:
    return

  def _get_pypi_package_name(module_name: str) -> Optional[str]:
    if '.' in module_name:
      return None
    return look_up(module_name)

  vars(module)['_get_pypi_package_name'] = _get_pypi_package_name


# tf_keras' module that imports pandas, only to recognize pandas objects
# among the inputs of fit, evaluate and predict (tf-keras==2.16.0).
_KERAS_DATA_ADAPTER = 'tf_keras.src.engine.data_adapter'


@contextlib.contextmanager
def _without_pandas(unused_module: types.ModuleType) -> Iterator[None]:
  """tf_keras' data adapter imported as where pandas is not installed.

  Importing pandas takes about 0.55 s, in every command that imports tf_keras
  (TensorFlow's own import does, through Keras' optimizers). tf_keras' data
  adapter imports it in a `try` and without it (`pd = None`) it simply does
  not take pandas objects as a model's input. The commands feed their models
  tf.data datasets and tensors, never pandas objects. pandas is unimportable
  while that one module runs; any other module that imports it, before or
  after, gets it as usual.
  """
  with _unimportable('pandas'):
    yield


@contextlib.contextmanager
def _then_top_level_names_only(module: types.ModuleType) -> Iterator[None]:
  yield
  _top_level_names_only(module)


class _AroundImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Runs the module `name`, found by the finders after this one, inside
  `around(module)`; leaves sys.meta_path when asked for it."""

  def __init__(self, name: str, around: Callable[[types.ModuleType],
                                                 ContextManager[None]]):
    self.name = name
    self._around = around
    self._loader: Any = None

  def find_spec(
      self,
      fullname: str,
      path: Optional[Sequence[str]],
      target: Optional[types.ModuleType] = None
  ) -> Optional[importlib.machinery.ModuleSpec]:
    if fullname != self.name or self._loader is not None:
      return None
    if self in sys.meta_path:
      sys.meta_path.remove(self)
    for finder in sys.meta_path:
      find = getattr(finder, 'find_spec', None)
      spec = find(fullname, path, target) if find is not None else None
      if spec is not None:
        break
    else:
      return None
    if spec.loader is None or not hasattr(spec.loader, 'exec_module'):
      return spec
    self._loader = spec.loader
    spec.loader = self
    return spec

  def create_module(
      self, spec: importlib.machinery.ModuleSpec) -> Optional[types.ModuleType]:
    return self._loader.create_module(spec)

  def exec_module(self, module: types.ModuleType) -> None:
    # The module's loader is the real one, for linecache and inspect.
    module.__loader__ = self._loader
    if module.__spec__ is not None:
      module.__spec__.loader = self._loader
    with self._around(module):
      self._loader.exec_module(module)


def _around_import(
    name: str, around: Callable[[types.ModuleType],
                                ContextManager[None]]) -> None:
  """`around` the module's import, unless it is imported or already has an
    _AroundImport."""
  if (name in sys.modules or any(
      isinstance(f, _AroundImport) and f.name == name for f in sys.meta_path)):
    return
  sys.meta_path.insert(0, _AroundImport(name, around))


@contextlib.contextmanager
def tensorflow_startup(keras: bool = True) -> Iterator[None]:
  """Around a command's imports of TensorFlow, TFDV, tf.Transform, Beam.

  Also for commands that never build a model (the server, trainer.predict,
  trainer.push, trainer.rollback): without TF_USE_LEGACY_KERAS, importing
  TensorFlow imports Keras 3 (about 0.7 s more); with it, tf_keras.
  keras=False, for those commands, imports TensorFlow without tf_keras
  (`_import_tensorflow_without_keras`).
  """
  set_environment()
  install_filters()
  _import_stdlib_distutils()
  _around_import(_PYTHON_VERSION_SUPPORT, _then_top_level_names_only)
  with native_stderr_filtered():
    if keras:
      _around_import(_KERAS_DATA_ADAPTER, _without_pandas)
    else:
      _import_tensorflow_without_keras()
    yield


def filter_runtime_noise() -> None:
  """For the rest of the process: its file descriptor 2 without the runtime
  noise (RUNTIME_NOISE); a command's process only, not a library's caller."""
  stderr_relay.start(RUNTIME_NOISE)
