"""The on-disk contracts: one class owns each layout's names.

In the manner of tf.Transform's `TFTransformOutput`, which owns the names of
the directory `tft_beam.WriteTransformFn` writes: a class per layout, with
the names as constants and lazy accessors, used by the writer and by every
reader. No other module spells a file or folder name of these layouts.

- `PreprocessOutput`: the output directory of `python -m pipeline.preprocess`
  (DESIGN.md: data/, raw/, stats/, quarantine/, manifest.json, ...).
- `ModelDir`: the model directory of `python -m trainer.task` (export/,
  metrics.json, logs/, report.html).
- `ExportDir`: one exported SavedModel version: its signatures' names, inputs
  and outputs, and what it carries beside the graph (assets.extra/).

Paths may be local or on any filesystem TensorFlow reads (gs://); file
access goes through tf.io.gfile, imported when first needed so that the
names alone cost nothing to import.
"""

import json
import os
import posixpath
from typing import Any, Dict, List, Optional

from core.config import DatasetConfig
from core.config import load_config
from core.config import parse_config
from core.errors import InputError


def _gfile() -> Any:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def join(root: str, *parts: str) -> str:
  """Joins path parts; '/' for URLs (gs://...), the OS separator otherwise."""
  if '://' in root:
    return posixpath.join(root, *parts)
  return os.path.join(root, *parts)


def is_version_name(name: str) -> bool:
  """A TF Serving version directory name: ASCII digits, within int64."""
  return (name.isascii() and name.isdigit() and int(name) <= 2**63 - 1)


class PreprocessOutput:
  """The preprocess output directory, finished or being written (staging).

  Splits are named train, eval and test; each has gzip TFRecord shards of
  transformed tf.Examples under data/, optionally the cleansed raw rows
  under raw/, and TFDV statistics under stats/.
  """

  CONFIG = 'config.yaml'  # the dataset config the run used
  MANIFEST = 'manifest.json'
  DATA_DIR = 'data'
  RAW_DIR = 'raw'
  STATS_DIR = 'stats'
  STATS_REPORT = 'report.html'  # in stats/
  QUARANTINE_DIR = 'quarantine'
  SCHEMA = 'schema.pbtxt'  # the schema the run was validated against
  ANOMALIES = 'anomalies.json'  # every split's anomalies and drift
  ANOMALIES_DIR = 'anomalies'  # anomalies/<split>.pbtxt: TFDV's protos
  TMP_DIR = 'tmp'  # Beam's and tf.Transform's temporary files, removed
  TRANSFORM_FN_DIR = 'transform_fn'  # as tft_beam.WriteTransformFn writes
  TRANSFORMED_METADATA_DIR = 'transformed_metadata'
  SHARD_SUFFIX = '.tfrecord.gz'
  # Siblings of the final directory: where a run writes until it publishes,
  # the lock the run holds meanwhile, and where a run refused by validation
  # keeps its evidence.
  STAGING_SUFFIX = '.tmp'
  LOCK_SUFFIX = '.lock'
  REJECTED_SUFFIX = '.rejected'

  def __init__(self, root: str):
    self.root = root.rstrip('/') or root
    self._config: Optional[DatasetConfig] = None
    self._manifest: Optional[Dict[str, Any]] = None

  def path(self, *parts: str) -> str:
    return join(self.root, *parts)

  # ---------------------------------------------------------------- files

  @property
  def config_path(self) -> str:
    return self.path(self.CONFIG)

  @property
  def manifest_path(self) -> str:
    return self.path(self.MANIFEST)

  @property
  def schema_path(self) -> str:
    return self.path(self.SCHEMA)

  @property
  def anomalies_path(self) -> str:
    return self.path(self.ANOMALIES)

  def anomalies_proto_path(self, split: str) -> str:
    return self.path(self.ANOMALIES_DIR, f'{split}.pbtxt')

  @property
  def quarantine_dir(self) -> str:
    return self.path(self.QUARANTINE_DIR)

  @property
  def tmp_dir(self) -> str:
    return self.path(self.TMP_DIR)

  def stats_path(self, split: str) -> str:
    """TFDV DatasetFeatureStatisticsList of one split."""
    return self.path(self.STATS_DIR, f'{split}.pb')

  @property
  def stats_report_path(self) -> str:
    return self.path(self.STATS_DIR, self.STATS_REPORT)

  def data_prefix(self, split: str) -> str:
    """Shards are `<prefix>-SSSSS-of-NNNNN.tfrecord.gz`."""
    return self.path(self.DATA_DIR, split)

  def raw_prefix(self, split: str) -> str:
    return self.path(self.RAW_DIR, split)

  def data_pattern(self, split: str) -> str:
    return f'{self.data_prefix(split)}-*{self.SHARD_SUFFIX}'

  def raw_pattern(self, split: str) -> str:
    return f'{self.raw_prefix(split)}-*{self.SHARD_SUFFIX}'

  def data_files(self, split: str) -> List[str]:
    return sorted(_gfile().glob(self.data_pattern(split)))

  def raw_files(self, split: str) -> List[str]:
    return sorted(_gfile().glob(self.raw_pattern(split)))

  def require_data_files(self, split: str) -> List[str]:
    files = self.data_files(split)
    if not files:
      raise InputError(f'no {split} data in {self.root}: nothing matches '
                       f'{self.data_pattern(split)}')
    return files

  # ------------------------------------------------------------- contents

  @property
  def config(self) -> DatasetConfig:
    """The dataset config the preprocess run used (its own copy)."""
    if self._config is None:
      if not _gfile().exists(self.config_path):
        raise InputError(f'{self.root}: no {self.CONFIG} there; is it the '
                         'output of python -m pipeline.preprocess?')
      self._config = load_config(self.config_path)
    return self._config

  @property
  def manifest(self) -> Dict[str, Any]:
    if self._manifest is None:
      with _gfile().GFile(self.manifest_path) as f:
        self._manifest = json.load(f)
    return self._manifest


class ExportDir:
  """One exported SavedModel version (TF Serving's `<base>/<version>/`).

  Signatures (trainer/export.py builds them):
    serving_default  input `examples`: serialized raw tf.Examples
    serving_raw      one input per raw feature
  Outputs by head: probabilities and classes (classification), predictions
  (regression). Beside the graph, in TF Serving's assets.extra/: the dataset
  config (how raw rows look) and metadata.json (task, threshold, outputs).
  """

  DEFAULT_SIGNATURE = 'serving_default'
  RAW_SIGNATURE = 'serving_raw'
  EXAMPLES_INPUT = 'examples'
  PROBABILITIES = 'probabilities'
  CLASSES = 'classes'
  PREDICTIONS = 'predictions'
  SAVED_MODEL = 'saved_model.pb'
  EXTRA_DIR = 'assets.extra'
  CONFIG = 'config.yaml'
  METADATA = 'metadata.json'

  def __init__(self, path: str):
    self.path = path.rstrip('/') or path
    self._config: Optional[DatasetConfig] = None
    self._metadata: Optional[Dict[str, Any]] = None

  @property
  def version(self) -> Optional[int]:
    name = os.path.basename(self.path)
    return int(name) if is_version_name(name) else None

  @property
  def saved_model_path(self) -> str:
    return join(self.path, self.SAVED_MODEL)

  @property
  def extra_dir(self) -> str:
    return join(self.path, self.EXTRA_DIR)

  @property
  def config_path(self) -> str:
    return join(self.extra_dir, self.CONFIG)

  @property
  def metadata_path(self) -> str:
    return join(self.extra_dir, self.METADATA)

  def exists(self) -> bool:
    return _gfile().exists(self.saved_model_path)

  @property
  def config(self) -> DatasetConfig:
    """The dataset config the model was trained with."""
    if self._config is None:
      if not _gfile().exists(self.config_path):
        raise InputError(f'{self.path} has no {self.EXTRA_DIR}/{self.CONFIG};'
                         ' it was not written by trainer.export')
      with _gfile().GFile(self.config_path) as f:
        self._config = parse_config(f.read(), where=self.config_path)
    return self._config

  @property
  def metadata(self) -> Dict[str, Any]:
    if self._metadata is None:
      with _gfile().GFile(self.metadata_path) as f:
        self._metadata = json.load(f)
    return self._metadata


def versions_in(base: str) -> List[int]:
  """The integer versions under a TF Serving model base path, ascending."""
  gfile = _gfile()
  if not gfile.isdir(base):
    return []
  names = (n.rstrip('/') for n in gfile.listdir(base))
  return sorted(int(n) for n in names if is_version_name(n))


class ModelDir:
  """The model directory trainer.task writes: export/<version>/ (a TF
  Serving model base path), metrics.json, logs/ and report.html."""

  EXPORT_DIR = 'export'
  METRICS = 'metrics.json'
  LOGS_DIR = 'logs'
  REPORT = 'report.html'
  # trainer.push's decision on the newest export (BLESSED or NOT_BLESSED,
  # the checks and metrics against the served model).
  BLESSING = 'blessing.json'
  # Held by the trainer or trainer.push working on the directory
  # (core/dir_lock.py), removed when it ends.
  LOCK = '.lock'

  def __init__(self, root: str):
    self.root = root.rstrip('/') or root

  def path(self, *parts: str) -> str:
    return join(self.root, *parts)

  @property
  def export_base(self) -> str:
    return self.path(self.EXPORT_DIR)

  @property
  def metrics_path(self) -> str:
    return self.path(self.METRICS)

  @property
  def logs_dir(self) -> str:
    return self.path(self.LOGS_DIR)

  @property
  def report_path(self) -> str:
    return self.path(self.REPORT)

  @property
  def blessing_path(self) -> str:
    return self.path(self.BLESSING)

  @property
  def lock_path(self) -> str:
    return self.path(self.LOCK)

  def versions(self) -> List[int]:
    return versions_in(self.export_base)

  def export(self, version: int) -> ExportDir:
    return ExportDir(join(self.export_base, str(version)))

  def latest_export(self) -> ExportDir:
    versions = self.versions()
    if not versions:
      raise InputError(
          f'no exported model in {self.root}: expected '
          f'{join(self.export_base, "<version>")}/{ExportDir.SAVED_MODEL} '
          '(run python -m trainer.task first)')
    return self.export(versions[-1])


class ServingDir:
  """A serving directory: the TF Serving model base path trainer.push
  publishes into and `trainer.serve --model-base-path` serves.

    BASE/<version>/          pushed exports; the highest one is served
    BASE/push_log.jsonl      one JSON line per push decision and rollback
    BASE/.rolled_back/<v>/   versions taken out of service by a rollback,
                             kept so that a later rollback can restore them
    BASE/.incoming-<v>-<pid> a push being copied (renamed to BASE/<v> when
                             complete)

  Names that are not integers are ignored by the server (as by TF Serving),
  so neither a version being copied nor a rolled-back one is ever served.
  """

  PUSH_LOG = 'push_log.jsonl'
  ROLLED_BACK_DIR = '.rolled_back'
  INCOMING_PREFIX = '.incoming-'

  def __init__(self, root: str):
    self.root = root.rstrip('/') or root

  def path(self, *parts: str) -> str:
    return join(self.root, *parts)

  @property
  def push_log_path(self) -> str:
    return self.path(self.PUSH_LOG)

  @property
  def rolled_back_dir(self) -> str:
    return self.path(self.ROLLED_BACK_DIR)

  def version_path(self, version: int) -> str:
    return self.path(str(version))

  def rolled_back_path(self, version: int) -> str:
    return join(self.rolled_back_dir, str(version))

  def incoming_path(self, version: int, pid: int) -> str:
    return self.path(f'{self.INCOMING_PREFIX}{version}-{pid}')

  def versions(self) -> List[int]:
    """Versions in service, ascending: the last one is served."""
    return versions_in(self.root)

  def rolled_back_versions(self) -> List[int]:
    return versions_in(self.rolled_back_dir)

  def export(self, version: int) -> ExportDir:
    return ExportDir(self.version_path(version))

  def served(self) -> Optional[ExportDir]:
    """The version the server serves (the highest), None when empty."""
    versions = self.versions()
    return self.export(versions[-1]) if versions else None


def resolve_export(path: str) -> ExportDir:
  """An export from a model directory (its newest version) or from a
  version directory itself."""
  export = ExportDir(path)
  if export.exists():
    return export
  return ModelDir(path).latest_export()
