"""tf.data input: transformed TFRecord shards to (features, label) batches.

The Beam job already did all feature engineering, so the input pipeline only
has to read and parse, and its job is to keep the accelerator (or the CPU
cores doing the math) from ever waiting for data: files are read in parallel
(interleave), parsing is vectorised per batch and runs in parallel, the next
batches are prefetched while the current one trains, and small datasets are
cached after the first pass.
"""

import collections
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

AUTOTUNE = tf.data.AUTOTUNE


def _untuned(ds: tf.data.Dataset) -> tf.data.Dataset:
  """`ds` without tf.data's autotuning thread.

  Deleting an iterator waits for that thread. Keras makes a new iterator
  each epoch, and after an epoch of training the old one's deletion waited
  0.2-1.3 s in about half of the epochs: about 2 s of the Adult training's
  11 epochs went to stalls between epochs. Untuned, each AUTOTUNE
  parallelism stays at TensorFlow's starting value (one call per core, at
  most 16), which delivers an epoch here as fast as the tuned pipeline; the
  batches and their order are the same (benchmarks/README.md, round 20).
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.with_options(options)


def feature_spec(
    tft_output: tft.TFTransformOutput) -> Dict[str, tf.io.FixedLenFeature]:
  return tft_output.transformed_feature_spec()


def fold_of(records: tf.Tensor, folds: int) -> tf.Tensor:
  """The K-fold fold (0 .. folds - 1) of serialized records.

  A fingerprint of the record's bytes: the same record lands in the same fold
  on every run, machine and shard layout, and no seed is involved.
  """
  return tf.strings.to_hash_bucket_fast(records, folds)


def fold_filter(folds: int, fold: int,
                keep: bool) -> Callable[[tf.Tensor], tf.Tensor]:
  """A record predicate: in fold `fold` (keep=True) or in any other fold."""

  def predicate(record):
    inside = tf.equal(fold_of(record, folds), fold)
    return inside if keep else tf.logical_not(inside)

  return predicate


def _records(files: List[str], training: bool, seed: Optional[int],
             record_filter: Optional[Callable]) -> tf.data.Dataset:
  files_ds = tf.data.Dataset.from_tensor_slices(files)
  if training:
    files_ds = files_ds.shuffle(
        len(files), seed=seed, reshuffle_each_iteration=True)
  ds = files_ds.interleave(
      lambda f: tf.data.TFRecordDataset(f, compression_type='GZIP'),
      cycle_length=min(len(files), 8),
      num_parallel_calls=AUTOTUNE,
      deterministic=True)
  if record_filter is not None:
    ds = ds.filter(record_filter)
  return ds


def _label_of(label_key: str, spec):
  label_spec = {label_key: spec[label_key]}

  def label(record):
    return tf.io.parse_single_example(record, label_spec)[label_key]

  return label


def label_summary(files: List[str],
                  spec: Dict[str, tf.io.FixedLenFeature],
                  label_key: str,
                  record_filter: Optional[Callable] = None) -> Dict[str, Any]:
  """One streaming pass over the labels of the records (after
  `record_filter`): {'rows', 'counts': {class index: rows}} for an int64
  (class) label; {'rows', 'mean', 'std'} for a float label."""
  ds = _records(files, False, None, record_filter).batch(4096)
  label_spec = {label_key: spec[label_key]}
  integer = spec[label_key].dtype.is_integer
  counts: collections.Counter = collections.Counter()
  rows, total, total_sq = 0, 0.0, 0.0
  for batch in ds:
    y = tf.io.parse_example(batch, label_spec)[label_key].numpy().reshape(-1)
    rows += int(y.size)
    if integer:
      values, n = np.unique(y, return_counts=True)
      counts.update(dict(zip(values.tolist(), n.tolist())))
    else:
      y = y.astype(np.float64)
      total += float(y.sum())
      total_sq += float(np.square(y).sum())
  if integer:
    return {'rows': rows, 'counts': dict(sorted(counts.items()))}
  mean = total / rows if rows else 0.0
  var = max(total_sq / rows - mean * mean, 0.0) if rows else 0.0
  return {'rows': rows, 'mean': mean, 'std': math.sqrt(var)}


def make_dataset(files: List[str],
                 spec: Dict[str, tf.io.FixedLenFeature],
                 label_key: str,
                 batch_size: int,
                 *,
                 training: bool,
                 shuffle_buffer: int = 10000,
                 seed: Optional[int] = None,
                 cache: bool = False,
                 repeat: bool = False,
                 record_filter: Optional[Callable] = None,
                 oversample: float = 0.0,
                 minority_label: int = 1,
                 label_dtype: tf.dtypes.DType = tf.float32) -> tf.data.Dataset:
  """Batches of (features dict, label [N, 1]) from gzip TFRecords.

  The label is `label_dtype`: float32 for binary labels (0/1) and regression
  targets, int64 class indices for multiclass ones.

  Training data is shuffled (file order and records) with a fixed seed, so a
  rerun with the same seed sees the same batches. Evaluation data keeps a
  deterministic order and no shuffling, so predictions line up with labels.

  record_filter: keep only the serialized records it accepts (K-fold).
  oversample (training only): the share of `minority_label` records in the
  stream. The records are split by label into two shuffled, endlessly
  repeated streams and `sample_from_datasets` draws from them with weights
  (1 - oversample, oversample), so minority rows recur more often than
  majority rows; the result is infinite (use steps_per_epoch).
  """
  ds = _records(files, training, seed, record_filter)
  # Evaluation batches are the same in every pass, so they are cached as
  # parsed: from the second pass on, no file, no parse, and no instance of
  # the parse function (each new iterator instantiates and optimizes it).
  cache_parsed = cache and not training and not repeat
  if cache and not cache_parsed:
    # Serialized records are small; caching them skips gzip + file reads from
    # the second epoch on while keeping the shuffle below effective.
    ds = ds.cache()
  if training and oversample:
    label = _label_of(label_key, spec)
    by_class = []
    for keep_minority in (False, True):

      def wanted(record, keep_minority=keep_minority):
        is_minority = tf.equal(label(record), minority_label)
        return is_minority if keep_minority else tf.logical_not(is_minority)

      part = ds.filter(wanted).repeat()
      by_class.append(
          part.shuffle(
              shuffle_buffer, seed=seed, reshuffle_each_iteration=True))
    ds = tf.data.Dataset.sample_from_datasets(
        by_class, weights=[1.0 - oversample, oversample], seed=seed)
  elif training:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat and not (training and oversample):
    ds = ds.repeat()
  ds = ds.batch(batch_size, drop_remainder=False)
  ds = ds.map(
      lambda records: _parse(records, spec, label_key, label_dtype),
      num_parallel_calls=AUTOTUNE,
      deterministic=True)
  if cache_parsed:
    ds = ds.cache()
  return _untuned(ds.prefetch(AUTOTUNE))


def _parse(
    records: tf.Tensor,
    spec,
    label_key: str,
    label_dtype: tf.dtypes.DType = tf.float32
) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
  features = tf.io.parse_example(records, spec)
  label = features.pop(label_key)
  return features, tf.reshape(tf.cast(label, label_dtype), [-1, 1])
