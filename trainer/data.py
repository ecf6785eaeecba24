"""tf.data input: transformed TFRecord shards to (features, label) batches.

The Beam job already did all feature engineering, so the input pipeline only
has to read and parse, and its job is to keep the accelerator (or the CPU
cores doing the math) from ever waiting for data: files are read in parallel
(interleave), parsing is vectorised per batch and runs in parallel, the next
batches are prefetched while the current one trains, and small datasets are
cached after the first pass.
"""

import os
from typing import Dict, List, Optional, Tuple

import tensorflow as tf
import tensorflow_transform as tft

from pipeline.errors import InputError

AUTOTUNE = tf.data.AUTOTUNE
DATA_DIR = 'data'


def split_pattern(preprocess_dir: str, split: str) -> str:
  return os.path.join(preprocess_dir, DATA_DIR, f'{split}-*.tfrecord.gz')


def split_files(preprocess_dir: str, split: str) -> List[str]:
  return sorted(tf.io.gfile.glob(split_pattern(preprocess_dir, split)))


def require_files(preprocess_dir: str, split: str) -> List[str]:
  files = split_files(preprocess_dir, split)
  if not files:
    raise InputError(f'no {split} data in {preprocess_dir}: nothing matches '
                     f'{split_pattern(preprocess_dir, split)}')
  return files


def feature_spec(tft_output: tft.TFTransformOutput) -> Dict[str, tf.io.FixedLenFeature]:
  return tft_output.transformed_feature_spec()


def make_dataset(files: List[str], spec: Dict[str, tf.io.FixedLenFeature],
                 label_key: str, batch_size: int, *, training: bool,
                 shuffle_buffer: int = 10000, seed: Optional[int] = None,
                 cache: bool = False, repeat: bool = False) -> tf.data.Dataset:
  """Batches of (features dict, label [N, 1] float32) from gzip TFRecords.

  Training data is shuffled (file order and records) with a fixed seed, so a
  rerun with the same seed sees the same batches. Evaluation data keeps a
  deterministic order and no shuffling, so predictions line up with labels.
  """
  files_ds = tf.data.Dataset.from_tensor_slices(files)
  if training:
    files_ds = files_ds.shuffle(len(files), seed=seed,
                                reshuffle_each_iteration=True)
  ds = files_ds.interleave(
      lambda f: tf.data.TFRecordDataset(f, compression_type='GZIP'),
      cycle_length=min(len(files), 8), num_parallel_calls=AUTOTUNE,
      deterministic=True)
  if cache:
    # Serialized records are small; caching them skips gzip + file reads from
    # the second epoch on while keeping the shuffle below effective.
    ds = ds.cache()
  if training:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  ds = ds.batch(batch_size, drop_remainder=False)
  ds = ds.map(lambda records: _parse(records, spec, label_key),
              num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.prefetch(AUTOTUNE)


def _parse(records: tf.Tensor, spec, label_key: str
          ) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
  features = tf.io.parse_example(records, spec)
  label = features.pop(label_key)
  return features, tf.reshape(tf.cast(label, tf.float32), [-1, 1])
