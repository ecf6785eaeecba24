"""Fitting the wide & deep model on a preprocess output.

train() reads the train split's labels once (their counts or mean and
standard deviation), builds the label's head (trainer/heads/), which decides
the class weights and how the training stream is drawn, then builds, compiles
and fits the model: early stopping on the head's watched validation metric
restores the best epoch's weights, an optional plateau schedule lowers the
learning rates, and TensorBoard logs go to MDIR/logs/. The records trained
and validated on are the train and eval splits by default; K-fold
(trainer/kfold.py) passes other Records.
"""

import dataclasses
import math
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from core.config import DatasetConfig
from core.errors import UserError
from core.layout import ModelDir
from core.layout import PreprocessOutput
from trainer import data
from trainer import heads
from trainer import hparams
from trainer import model

EVAL_BATCH_SIZE = 2048


class _EpochTimer(keras.callbacks.Callback):
  """Counts epochs actually run (early stopping may end training sooner)."""

  def __init__(self):
    super().__init__()
    self.epochs = 0

  def on_epoch_end(self, epoch, logs=None):
    self.epochs = epoch + 1


@dataclasses.dataclass(frozen=True)
class Records:
  """Some TFRecord files, optionally narrowed by a record predicate."""
  files: List[str]
  record_filter: Optional[Callable] = None


def train(
    config: DatasetConfig,
    tft_output: tft.TFTransformOutput,
    hp: hparams.HParams,
    preprocess_dir: str,
    model_dir: str,
    strategy: tf.distribute.Strategy,
    chief: bool = True,
    verbose: int = 2,
    train_records: Optional[Records] = None,
    val_records: Optional[Records] = None,
    log_dir: Optional[str] = None
) -> Tuple[keras.Model, List[model.ModelFeature], heads.Head, Dict[str, Any]]:
  """Builds and fits the model; returns (model, features, head, training
  summary).

  By default it trains on the train split and validates (early stopping, the
  plateau schedule) on the eval split; K-fold passes other records.
  """
  spec = data.feature_spec(tft_output)
  label = config.label.column
  train_records = train_records or Records(
      PreprocessOutput(preprocess_dir).require_data_files('train'))
  val_records = val_records or Records(
      PreprocessOutput(preprocess_dir).require_data_files('eval'))
  labels = data.label_summary(train_records.files, spec, label,
                              train_records.record_filter)
  if not labels['rows']:
    raise UserError(f'no training records in {preprocess_dir}')
  head = heads.make_head(config, labels)
  counts = head.class_counts(labels)
  # Checked before the class weights: a config wrong in both names the
  # oversampling first.
  stream = head.oversampling(hp, counts)
  steps_per_epoch = stream.steps_per_epoch
  schedule_steps = steps_per_epoch or math.ceil(labels['rows'] / hp.batch_size)
  class_weight = head.class_weight(hp, counts)

  train_ds = data.make_dataset(
      train_records.files,
      spec,
      label,
      hp.batch_size,
      training=True,
      shuffle_buffer=hp.shuffle_buffer,
      seed=hp.seed,
      cache=hp.cache,
      repeat=hp.steps_per_epoch is not None,
      record_filter=train_records.record_filter,
      oversample=hp.oversample,
      minority_label=stream.minority_label,
      label_dtype=head.label_dtype)
  eval_ds = data.make_dataset(
      val_records.files,
      spec,
      label,
      EVAL_BATCH_SIZE,
      training=False,
      cache=hp.cache,
      record_filter=val_records.record_filter,
      label_dtype=head.label_dtype)

  features = model.model_features(config, tft_output, hp)
  with strategy.scope():
    m = model.compile_model(
        model.build_model(features, hp, head),
        hp,
        head,
        steps_per_epoch=schedule_steps)

  early = keras.callbacks.EarlyStopping(
      monitor=head.monitor,
      mode=head.monitor_mode,
      patience=hp.early_stopping_patience,
      restore_best_weights=True,
      verbose=1 if verbose else 0)
  timer = _EpochTimer()
  callbacks = [early, timer]
  plateau = None
  if hp.lr_schedule == 'plateau':
    plateau = model.ReduceOnPlateau(
        head.monitor,
        hp.lr_decay_factor,
        hp.lr_patience,
        hp.lr_min_fraction,
        mode=head.monitor_mode)
    callbacks.append(plateau)
  if chief:
    callbacks.append(
        keras.callbacks.TensorBoard(
            log_dir=log_dir or ModelDir(model_dir).logs_dir,
            update_freq='epoch',
            profile_batch=0))
  start = time.monotonic()
  history = m.fit(
      train_ds,
      validation_data=eval_ds,
      epochs=hp.epochs,
      steps_per_epoch=steps_per_epoch,
      callbacks=callbacks,
      class_weight=class_weight,
      verbose=verbose)
  seconds = time.monotonic() - start
  watched = history.history.get(head.monitor, [])
  best = (max if head.monitor_mode == 'max' else min)
  summary = {
      'seconds': round(seconds, 2),
      'epochs_run': timer.epochs,
      'best_epoch': early.best_epoch + 1 if watched else None,
      'monitor': head.monitor,
      'best_monitor_streaming': float(best(watched)) if watched else None,
      'replicas': strategy.num_replicas_in_sync,
      'train_rows': labels['rows'],
      'class_weight': ({
          str(k): v for k, v in class_weight.items()
      } if class_weight else None),
      'oversample': hp.oversample or None,
      'steps_per_epoch': steps_per_epoch,
      'lr_reduced_after_epochs': plateau.reductions if plateau else None,
      'history': {
          k: [float(v) for v in vals] for k, vals in history.history.items()
      },
  }
  summary.update(head.train_label_summary(labels, counts))
  return m, features, head, summary


def eval_dataset(config: DatasetConfig, tft_output: tft.TFTransformOutput,
                 records: Records) -> tf.data.Dataset:
  """Finite (features, label) batches of `records` for scoring."""
  return data.make_dataset(
      records.files,
      data.feature_spec(tft_output),
      config.label.column,
      EVAL_BATCH_SIZE,
      training=False,
      record_filter=records.record_filter,
      label_dtype=heads.make_head(config).label_dtype)


def eval_datasets(config: DatasetConfig, tft_output: tft.TFTransformOutput,
                  preprocess_dir: str,
                  splits: Sequence[str]) -> Dict[str, tf.data.Dataset]:
  """split -> eval_dataset for each of `splits` that has data."""
  datasets = {}
  for split in splits:
    files = PreprocessOutput(preprocess_dir).data_files(split)
    if files:
      datasets[split] = eval_dataset(config, tft_output, Records(files))
  return datasets
