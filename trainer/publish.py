"""Changing what a serving directory serves: publish, roll back, log.

The server (like TF Serving) serves the highest integer version under the
model base path and ignores every other name (core/layout.py's ServingDir).
So each change here is one rename that the server sees whole:

- publish: the export is copied to BASE/.incoming-<v>-<pid>, a name the
  server ignores, and renamed to BASE/<v> only when every file is there;
- roll back: the served version is renamed to BASE/.rolled_back/<v>, so the
  next one down becomes the highest and is served at the server's next
  poll; restoring a version renames it back.

On a local file system a rename is atomic. On an object store (gs://) a
directory rename copies object by object; the server loads a version only
once its files have stopped changing between two polls, so a partly moved
version is not loaded there either. Every push decision and rollback is
appended to BASE/push_log.jsonl.
"""

import datetime
import json
import math
import os
from typing import Any, Dict, List, Mapping

import tensorflow as tf

from core import cli
from core.errors import InputError
from core.layout import ExportDir
from core.layout import join
from core.layout import ServingDir


def now() -> str:
  return datetime.datetime.now(
      datetime.timezone.utc).isoformat(timespec='seconds')


def json_safe(value: Any) -> Any:
  """NaN and infinities as null: JSON has no such numbers."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  return value


def next_version(serving: ServingDir, proposed: int) -> int:
  """`proposed` (the export's own version) unless a version at least as
  high is in service or rolled back: then one above the highest, so the
  new version is the one served and never collides with a restored one."""
  taken = serving.versions() + serving.rolled_back_versions()
  return max([proposed] + [v + 1 for v in taken])


def _copy_tree(source: str, target: str) -> None:
  for root, dirs, files in tf.io.gfile.walk(source):
    rel = os.path.relpath(root, source) if '://' not in source else (
        root[len(source):].strip('/'))
    here = target if rel in ('', '.') else join(target, rel)
    tf.io.gfile.makedirs(here)
    for d in dirs:
      tf.io.gfile.makedirs(join(here, d.rstrip('/')))
    for name in files:
      tf.io.gfile.copy(join(root, name), join(here, name), overwrite=True)


def publish(export: ExportDir, serving: ServingDir) -> Dict[str, Any]:
  """Copies the export into the serving directory as a new version, whole
  or not at all; returns {'version', 'path'}."""
  tf.io.gfile.makedirs(serving.root)
  version = next_version(serving, export.version or 0)
  incoming = serving.incoming_path(version, os.getpid())
  final = serving.version_path(version)
  if tf.io.gfile.exists(incoming):
    tf.io.gfile.rmtree(incoming)
  try:
    _copy_tree(export.path, incoming)
    if tf.io.gfile.exists(final):  # pushed meanwhile by another process
      raise InputError(f'{final} appeared while copying; push again')
    cli.check_stop()  # a stop that a destructor swallowed publishes nothing
    tf.io.gfile.rename(incoming, final)
  finally:
    if tf.io.gfile.exists(incoming):
      tf.io.gfile.rmtree(incoming)
  return {'version': version, 'path': final}


def take_out(serving: ServingDir, version: int) -> str:
  """Moves a version out of service into .rolled_back/; returns where."""
  target = serving.rolled_back_path(version)
  if tf.io.gfile.exists(target):
    raise InputError(f'{target} exists already; move it away first')
  tf.io.gfile.makedirs(serving.rolled_back_dir)
  tf.io.gfile.rename(serving.version_path(version), target)
  return target


def restore(serving: ServingDir, version: int) -> str:
  """Moves a rolled-back version back into service; returns where."""
  target = serving.version_path(version)
  if tf.io.gfile.exists(target):
    raise InputError(f'{target} exists already')
  tf.io.gfile.rename(serving.rolled_back_path(version), target)
  return target


def append_log(serving: ServingDir, entry: Mapping[str, Any]) -> None:
  """One JSON line at the end of BASE/push_log.jsonl."""
  tf.io.gfile.makedirs(serving.root)
  line = json.dumps(json_safe(dict(entry)), sort_keys=True) + '\n'
  path = serving.push_log_path
  if '://' not in path:
    with tf.io.gfile.GFile(path, 'a') as f:  # one write, appended
      f.write(line)
    return
  old = ''
  if tf.io.gfile.exists(path):  # object stores cannot append
    with tf.io.gfile.GFile(path) as f:
      old = f.read()
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(old + line)


def read_log(serving: ServingDir) -> List[Dict[str, Any]]:
  if not tf.io.gfile.exists(serving.push_log_path):
    return []
  with tf.io.gfile.GFile(serving.push_log_path) as f:
    return [json.loads(line) for line in f if line.strip()]
