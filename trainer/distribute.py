"""Distribution strategies: one flag, from a laptop to a multi-worker cluster.

`default` is TensorFlow's no-op strategy (one device). `mirrored` replicates
the model over the local GPUs, or over the local logical CPU devices when there
is no GPU and more than one CPU device is configured (which is how the test
suite exercises real multi-replica training on a CPU-only machine).
`multi_worker_mirrored` reads the cluster from TF_CONFIG, as on Vertex AI or
any Kubernetes TF job; without TF_CONFIG it is a single-worker cluster.
"""

import json
import os
from typing import Tuple

import tensorflow as tf

from trainer import flags

STRATEGIES = flags.STRATEGIES


def make_strategy(name: str) -> tf.distribute.Strategy:
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'mirrored':
    if tf.config.list_logical_devices('GPU'):
      return tf.distribute.MirroredStrategy()
    cpus = [d.name for d in tf.config.list_logical_devices('CPU')]
    return tf.distribute.MirroredStrategy(devices=cpus)
  if name == 'multi_worker_mirrored':
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f'unknown distribution strategy {name!r}; choose one of '
                   f'{", ".join(STRATEGIES)}')


def task_type_and_index() -> Tuple[str, int]:
  task = json.loads(os.environ.get('TF_CONFIG') or '{}').get('task') or {}
  return task.get('type') or 'chief', int(task.get('index') or 0)


def is_chief() -> bool:
  """Whether this process writes outputs (the chief, or worker 0 if none)."""
  tf_config = json.loads(os.environ.get('TF_CONFIG') or '{}')
  cluster = tf_config.get('cluster') or {}
  task_type, index = task_type_and_index()
  if 'chief' in cluster:
    return task_type == 'chief'
  return task_type in ('chief', 'worker') and index == 0
