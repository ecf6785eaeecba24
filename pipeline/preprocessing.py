"""The tf.Transform preprocessing_fn, built from the dataset config.

This graph is the single definition of feature engineering. The Beam job
analyzes it on the train split and applies it to every split; the exported
model embeds the very same graph in its serving signatures. So anything that
must behave identically at training and serving time (trimming stray spaces,
treating `?` as missing, imputing, scaling, bucketing, vocabulary lookup,
hashing crosses) is done here, in TensorFlow ops, and not in Python.
"""

from typing import Callable, Dict

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform import schema_inference

from pipeline.config import (BUCKET_SUFFIX, CategoricalFeature, DatasetConfig,
                             NumericFeature)

_CROSS_JOIN = '\x1f'


def _dense_column(x, default) -> tf.Tensor:
  """[batch] tensor from a raw feature, `default` where the value is absent."""
  if isinstance(x, tf.SparseTensor):
    x = tf.sparse.to_dense(
        tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]),
        default_value=default)
    return tf.reshape(x, [-1])
  x = tf.convert_to_tensor(x)
  return tf.reshape(x, [-1]) if x.shape.rank != 1 else x


def clean_strings(x, config: DatasetConfig) -> tf.Tensor:
  """Trimmed strings, with missing tokens mapped to the missing category."""
  s = tf.strings.strip(_dense_column(x, ''))
  missing = tf.zeros_like(s, dtype=tf.bool)
  for token in config.missing_values:
    missing = tf.logical_or(missing, tf.equal(s, token))
  return tf.where(missing, tf.constant(config.missing_category), s)


def _numeric(x, spec: NumericFeature, outputs: Dict[str, tf.Tensor]) -> None:
  if isinstance(x, tf.SparseTensor):
    present = _dense_column(
        tf.SparseTensor(x.indices, tf.ones_like(x.values, tf.bool),
                        x.dense_shape), False)
    value = _dense_column(
        tf.SparseTensor(x.indices, tf.cast(x.values, tf.float32),
                        x.dense_shape), 0.0)
  else:
    value = tf.cast(_dense_column(x, 0.0), tf.float32)
    present = tf.ones_like(value, tf.bool)
  # Absent values and NaN (how Parquet and serving clients spell missing)
  # are both missing.
  missing = tf.logical_or(tf.logical_not(present), tf.math.is_nan(value))
  if spec.impute == 'mean':
    # Full-pass mean over the values that are present in train.
    fill = tft.mean(tf.boolean_mask(value, tf.logical_not(missing)),
                    name=spec.name + '_impute_mean')
    fill = tf.where(tf.math.is_nan(fill), 0.0, fill)
  else:
    fill = tf.constant(0.0)
  value = tf.where(missing, fill, value)
  if spec.log1p:
    # Signed so that a negative value at serving time cannot produce NaN.
    value = tf.sign(value) * tf.math.log1p(tf.abs(value))
  if spec.scale == 'zscore':
    outputs[spec.name] = tft.scale_to_z_score(value,
                                              name=spec.name + '_zscore')
  elif spec.scale == 'minmax':
    outputs[spec.name] = tft.scale_to_0_1(value, name=spec.name + '_minmax')
  elif not spec.buckets:
    outputs[spec.name] = value
  if spec.buckets:
    outputs[spec.name + BUCKET_SUFFIX] = tft.bucketize(
        value, spec.buckets, name=spec.name + BUCKET_SUFFIX)


def _categorical(strings: tf.Tensor, spec: CategoricalFeature) -> tf.Tensor:
  if spec.vocabulary:
    return tft.compute_and_apply_vocabulary(
        strings,
        top_k=spec.top_k,
        # Thresholds of 0 and 1 keep every token; TFT wants None for that.
        frequency_threshold=(spec.frequency_threshold
                             if spec.frequency_threshold > 1 else None),
        num_oov_buckets=spec.oov_buckets,
        vocab_filename=spec.name,
        name=spec.name)
  return _hash_ids(strings, spec.hash_buckets)


def _hash_ids(strings: tf.Tensor, buckets: int) -> tf.Tensor:
  ids = tft.hash_strings(strings, buckets)
  # Record the id range in the transformed schema, as the vocabulary and bucket
  # mappers do, so the trainer can size its one-hot and embedding layers.
  schema_inference.set_tensor_schema_override(
      ids, tf.constant(0, tf.int64), tf.constant(buckets - 1, tf.int64))
  return ids


def label_transform(x, config: DatasetConfig) -> tf.Tensor:
  """Binary label: 1 for the positive class, 0 otherwise."""
  label = tf.strings.strip(_dense_column(x, ''))
  return tf.cast(tf.equal(label, config.label.positive), tf.int64)


def make_preprocessing_fn(config: DatasetConfig
                         ) -> Callable[[Dict[str, tf.Tensor]],
                                       Dict[str, tf.Tensor]]:
  """Returns the preprocessing_fn for `config`.

  Inputs are the raw features (and the label when present), each a
  SparseTensor of shape [batch, 1] as parsed from variable-length features.
  Outputs are dense [batch] tensors: float32 for scaled numerics, int64 ids for
  buckets, vocabularies and hashed crosses, and the int64 label.
  """

  def preprocessing_fn(inputs):
    outputs = {}
    for spec in config.numeric:
      _numeric(inputs[spec.name], spec, outputs)
    crossable = {}
    for spec in config.categorical:
      strings = clean_strings(inputs[spec.name], config)
      crossable[spec.name] = strings
      outputs[spec.name] = _categorical(strings, spec)
    for spec in config.numeric:
      if spec.buckets:
        name = spec.name + BUCKET_SUFFIX
        crossable[name] = tf.strings.as_string(outputs[name])
    for cross in config.crosses:
      joined = tf.strings.join([crossable[f] for f in cross.features],
                               separator=_CROSS_JOIN)
      outputs[cross.name] = _hash_ids(joined, cross.hash_buckets)
    if config.label.column in inputs:
      outputs[config.label.column] = label_transform(
          inputs[config.label.column], config)
    return outputs

  return preprocessing_fn
