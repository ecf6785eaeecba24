"""The raw features as TensorFlow parses them: one spec for every consumer.

Every raw feature is variable-length (a missing value is an absent value), so
a tf.Example with a missing feature still parses at serving time. The Beam
job's Arrow schema and tensor adapter (pipeline/features.py), the serving
signatures (trainer/export.py) and the request checks all derive from this.
"""

from typing import Dict

import tensorflow as tf

from core.config import Column
from core.config import DatasetConfig

_TF_DTYPES = {'int': tf.int64, 'float': tf.float32, 'string': tf.string}


def tf_dtype(column: Column) -> tf.dtypes.DType:
  return _TF_DTYPES[column.raw_type]


def raw_feature_spec(
    config: DatasetConfig,
    include_label: bool = True) -> Dict[str, tf.io.VarLenFeature]:
  """Raw columns the pipeline carries (see DatasetConfig.raw_columns), the
  label unless include_label=False (what a serving client sends)."""
  return {
      c.name: tf.io.VarLenFeature(tf_dtype(c))
      for c in config.raw_columns
      if include_label or c.name != config.label.column
  }
