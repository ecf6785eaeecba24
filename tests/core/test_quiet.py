"""Library notices are filtered by their exact text; everything else prints."""

import json
import logging
import os
from typing import Any, Tuple

import pytest

from core import quiet
from tests.conftest import ROOT
from tests.conftest import run_python

_JOB_LOGGER = 'apache_beam.runners.portability.local_job_service'


def _worker_record(discarded: str) -> str:
  # How Beam's job service prints a worker's log entry (str() of the proto).
  return ('severity: WARN timestamp {   seconds: 1 } message: "Discarding '
          f'unparseable args: [{discarded}]" log_location: "x.py:1"')


@pytest.fixture
def job_log(caplog):
  quiet.install_filters()
  caplog.set_level(logging.INFO)
  return caplog


def test_workers_notice_about_beams_own_flags_is_dropped(job_log):
  logging.getLogger(_JOB_LOGGER).warning(
      'Worker: %s',
      _worker_record(r"\'--direct_runner_use_stacked_bundle\', "
                     r"\'--pipeline_type_check\'"))
  logging.getLogger().warning(_worker_record(r"\'--pipeline_type_check\'"))
  assert job_log.records == []


def test_discarded_arguments_of_the_user_still_print(job_log):
  # A mistyped option is the user's to see, also next to Beam's own.
  logging.getLogger(_JOB_LOGGER).warning(
      'Worker: %s',
      _worker_record(r"\'--direct_num_worker\', \'--pipeline_type_check\'"))
  logging.getLogger().warning('Discarding unparseable args: []')
  logging.getLogger(_JOB_LOGGER).warning('Worker: %s', 'another message')
  assert len(job_log.records) == 3
  assert '--direct_num_worker' in job_log.records[0].getMessage()


def test_child_processes_inherit_the_warning_filters(monkeypatch):
  monkeypatch.setenv('PYTHONWARNINGS', 'error::DeprecationWarning')
  quiet.set_environment()
  quiet.set_environment()  # idempotent
  entries = os.environ['PYTHONWARNINGS'].split(',')
  assert entries[0] == 'error::DeprecationWarning'  # the user's, kept
  assert len(entries) == 3
  # A fresh interpreter (as a Beam worker process) applies them: the
  # Google clients' two notices are filtered, another FutureWarning is not.
  code = '\n'.join([
      'import warnings',
      'for text, module in [',
      "    ('grpcio < 1.83.0 does not support Post-Quantum Cryptography',",
      "     'google.auth.transport.grpc'),",
      "    ('You are using a Python version (3.11.7) which Google will stop',",
      "     'google.api_core._python_version_support'),",
      "    ('grpcio < 1.83.0 from elsewhere', 'somewhere.else')]:",
      '  warnings.warn_explicit(text, FutureWarning, module + ".py", 1,',
      '                         module=module)',
  ])
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  proc = run_python(['-c', code], env)
  assert proc.returncode == 0, proc.stderr
  assert 'from elsewhere' in proc.stderr
  assert 'Post-Quantum' not in proc.stderr
  assert 'Google will stop' not in proc.stderr


def test_tensorflow_without_keras_leaves_tf_keras_importable():
  """keras=False (the server, trainer.predict) skips the tf_keras import
  TensorFlow's own import adds; tf_keras and tf.keras load when asked."""
  code = '\n'.join([
      'import json, sys',
      'from core import quiet',
      'with quiet.tensorflow_startup(keras=False):',
      '  import tensorflow as tf',
      "loaded = 'tf_keras' in sys.modules",
      "print(tf.constant([1.0, 2.0]).numpy().sum(), flush=True)",
      'import tf_keras',
      'layer = tf.keras.layers.Dense(1)',
      "print(json.dumps([loaded, type(layer).__module__, sys.modules.get('tf_keras') is not None]))",
  ])
  env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='3')
  env.pop('TF_USE_LEGACY_KERAS', None)
  proc = run_python(['-c', code], env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert lines[0] == '3.0'
  loaded, layer_module, importable = json.loads(lines[-1])
  assert not loaded
  assert layer_module.startswith('tf_keras.'), layer_module
  assert importable


def _json_from_fresh_python(lines, **env_vars) -> Tuple[Any, str]:
  """Runs `lines` in a fresh interpreter at the repository root: (what its
  last line of stdout holds as JSON, its stderr)."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), **env_vars)
  proc = run_python(['-c', '\n'.join(lines)], env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _distutils_after_startup(code: str, **env_vars) -> dict:
  lines = [
      'import json, sys',
      'from core import quiet',
      "shim = getattr(sys.modules.get('_distutils_hack'), "
      "'DISTUTILS_FINDER', None)",
      'with quiet.tensorflow_startup():',
      f'  {code}',
      'import distutils',
      'print(json.dumps(dict(shim=shim is not None, '
      'shim_kept=shim in sys.meta_path, file=distutils.__file__, '
      "pkg_resources='pkg_resources' in sys.modules)))",
  ]
  seen, stderr = _json_from_fresh_python(
      lines, TF_CPP_MIN_LOG_LEVEL='3', **env_vars)
  return dict(seen, stderr=stderr)


def test_tensorflow_gets_the_standard_librarys_distutils():
  """TensorFlow's `import distutils` gets the standard library's copy, not
  setuptools' (which imports pkg_resources); the shim stays for later
  imports, and an explicit SETUPTOOLS_USE_DISTUTILS=local is kept."""
  seen = _distutils_after_startup('import tensorflow')
  if not seen['shim']:
    pytest.skip("this Python's setuptools installed no distutils shim")
  assert '/setuptools/' not in seen['file'], seen
  assert not seen['pkg_resources'], seen
  assert seen['shim_kept'], seen
  assert 'distutils' not in seen['stderr'], seen['stderr'][-2000:]
  local = _distutils_after_startup('pass', SETUPTOOLS_USE_DISTUTILS='local')
  assert '/setuptools/_distutils/' in local['file'], local


def _google_version_notices(startup: bool) -> dict:
  """google-api-core's notices about the Python version, for a deprecated
  and an ended version, naming a dotted and an undotted package, in a
  process that entered tensorflow_startup() or not; and how many scans of
  the installed distributions the dotted names took."""
  notices, _ = _json_from_fresh_python([
      'import datetime, json, sys, warnings',
      'from importlib import metadata',
      'scans = []',
      'scan = metadata.packages_distributions',
      'metadata.packages_distributions = lambda: scans.append(1) or scan()',
      'from core import quiet',
      f'if {startup}:',
      '  with quiet.tensorflow_startup():',
      '    pass',
      'with warnings.catch_warnings():',
      '  warnings.simplefilter("ignore")',
      '  import google.api_core',
      'from google.api_core import _python_version_support as support',
      'support._cached_packages_distributions.cache_clear()',
      'del scans[:]',
      'eol = support.PYTHON_VERSION_INFO[sys.version_info[:2]].python_eol',
      'days = datetime.timedelta(days=30)',
      'with warnings.catch_warnings(record=True) as caught:',
      '  warnings.simplefilter("always")',
      '  for today in (eol - days, eol + days):',
      '    support.check_python_version("google.api_core", today=today)',
      '  dotted_scans = len(scans)',
      '  support.check_python_version("google", today=eol - days)',
      'print(json.dumps({',
      '    "notices": [str(w.message) for w in caught],',
      '    "dotted_scans": dotted_scans,',
      '    "loader": type(support.__loader__).__name__,',
      '    "finders": [getattr(f, "name", type(f).__name__)',
      '                for f in sys.meta_path]}))',
  ])
  return notices


def test_google_api_core_names_packages_without_scanning_for_dotted_names():
  """After tensorflow_startup(), google-api-core's Python version notices
  say what they said before, word for word, without reading every installed
  distribution's metadata for a dotted package name; an undotted name is
  still looked up. The module keeps its own loader."""
  before = _google_version_notices(startup=False)
  after = _google_version_notices(startup=True)
  assert len(before['notices']) == 3, before
  assert after['notices'] == before['notices']
  assert 'google.api_core' in after['notices'][0]
  assert before['dotted_scans'] == 1, before
  assert after['dotted_scans'] == 0, after
  assert after['loader'] == before['loader'] == 'SourceFileLoader'
  assert 'google.api_core._python_version_support' not in after['finders']
  assert 'google.api_core._python_version_support' not in before['finders']


def _keras_after_import(startup: bool) -> dict:
  lines = [
      'import contextlib, json, sys',
      'from core import quiet',
      f'with (quiet.tensorflow_startup() if {startup} else',
      '      contextlib.nullcontext()):',
      '  import tensorflow as tf',
      '  import tf_keras',
      'from tf_keras.src.engine import data_adapter',
      'imported = "pandas" in sys.modules',
      'inputs = tf_keras.Input(shape=(2,))',
      'model = tf_keras.Model(inputs, tf_keras.layers.Dense(1)(inputs))',
      'model.compile(loss="mse")',
      'data = tf.data.Dataset.from_tensor_slices(',
      '    ([[1.0, 2.0]] * 8, [[1.0]] * 8)).batch(4)',
      'fitted = model.fit(data, epochs=2, verbose=0).history["loss"]',
      'predicted = model.predict(tf.constant([[1.0, 2.0]]), verbose=0)',
      'import pandas',
      'print(json.dumps(dict(imported=imported,',
      '    adapter_has_pandas=data_adapter.pd is not None,',
      '    fitted=len(fitted), predicted=list(predicted.shape),',
      '    pandas=pandas.__name__, frame=len(pandas.DataFrame({"a": [1]})),',
      '    finders=[getattr(f, "name", type(f).__name__)',
      '             for f in sys.meta_path])))',
  ]
  seen, _ = _json_from_fresh_python(
      lines, TF_CPP_MIN_LOG_LEVEL='3', TF_USE_LEGACY_KERAS='1')
  return seen


def test_tf_keras_is_imported_without_pandas_which_imports_later():
  """Inside tensorflow_startup(), tf_keras' data adapter is imported as where
  pandas is not installed (without it, importing TensorFlow and tf_keras
  imports pandas); a model fits on a dataset and predicts on a tensor, and
  pandas imports afterwards as usual."""
  before = _keras_after_import(startup=False)
  after = _keras_after_import(startup=True)
  assert before['imported'] and before['adapter_has_pandas'], before
  assert not after['imported'] and not after['adapter_has_pandas'], after
  for seen in (before, after):
    assert seen['fitted'] == 2 and seen['predicted'] == [1, 1], seen
    assert seen['pandas'] == 'pandas' and seen['frame'] == 1, seen
  assert 'tf_keras.src.engine.data_adapter' not in after['finders'], after


def test_tf_transform_tf1_mode_notices_are_dropped_and_their_kin_kept():
  """The records that tf.Transform's TF1 graph mode makes TensorFlow print,
  each made by the code that makes it in a job; the same kinds of record
  about anything else still print."""
  code = '\n'.join([
      'import collections, logging',
      'from core import quiet',
      'with quiet.tensorflow_startup():',
      '  import tensorflow as tf',
      '  from tensorflow.python.framework import ops',
      '  from google.protobuf import any_pb2',
      '  from tensorflow_transform.beam import impl',
      'logging.basicConfig(format="%(levelname)s %(message)s")',
      'impl._warn_about_tf_compat_v1()',
      'graph = tf.Graph()',
      'with graph.as_default():',
      '  for key in ("tft_analyzer_use", "my_collection"):',
      '    tf.compat.v1.add_to_collection(key, collections.Counter())',
      '  tf.compat.v1.train.export_meta_graph(graph=graph)',
      '  info = tf.compat.v1.saved_model.utils.build_tensor_info(',
      '      tf.constant(1.0))',
      '  tf.compat.v1.saved_model.utils.get_tensor_from_tensor_info(info)',
      'ops.strip_name_scope(any_pb2.Any(',
      '    type_url="type.googleapis.com/tensorflow.AssetFileDef"), "s")',
      'ops.strip_name_scope(any_pb2.Any(type_url="elsewhere"), "s")',
      'print("done", flush=True)',
  ])
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  proc = run_python(['-c', code], env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == 'done'
  err = proc.stderr
  for dropped in ('tf.compat.v1 mode', 'serializing tft_analyzer_use',
                  'build_tensor_info', 'tensorflow.AssetFileDef'):
    assert dropped not in err, err[-3000:]
  for kept in ('serializing my_collection', 'get_tensor_from_tensor_info',
               'got type_url: "elsewhere"'):
    assert kept in err, err[-3000:]
