"""python -m trainer.task: train, evaluate and export the wide & deep model.

    python -m trainer.task --preprocess-dir DIR --model-dir MDIR [--epochs N]
        [--batch-size B] [--steps-per-epoch S] [--hidden-units 100,50]
        [--wide-learning-rate LR] [--deep-learning-rate LR]
        [--distribution-strategy {default,mirrored,multi_worker_mirrored}]
        [--seed N] [...]

Everything dataset-specific is read from DIR: the dataset config the
preprocess job copied there (DIR/config.yaml), the transformed metadata and the
transform graph. Hyperparameters come from the config's `model:` section,
overridden by flags of the same name.

Writes MDIR/logs/ (TensorBoard), MDIR/metrics.json (eval and, when DIR has a
test split, test metrics) and MDIR/export/<version>/ (the serving SavedModel).
Early stopping watches the eval split's AUC and restores the best epoch's
weights; the test split is never looked at before the final evaluation.
"""

import argparse
import datetime
import logging
import os
import sys
import time
from typing import Any, Dict, Optional, Sequence

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from pipeline.config import DatasetConfig, load_config
from pipeline.errors import UserError
from trainer import data, distribute, evaluate, export, hparams, model

CONFIG_COPY = 'config.yaml'
LOGS_DIR = 'logs'
EVAL_BATCH_SIZE = 2048


def _add_hparam_flags(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group(
      'hyperparameters', 'default: the config\'s model: section, else the '
      'built-in default shown')
  for name, field in hparams.flag_names().items():
    flag = '--' + name.replace('_', '-')
    default = field.default
    shown = (','.join(map(str, default)) if isinstance(default, tuple)
             else default)
    if isinstance(default, bool):
      group.add_argument(flag, dest=name, default=None,
                         action=argparse.BooleanOptionalAction,
                         help=f'(built-in default: {shown})')
    else:
      group.add_argument(flag, dest=name, default=None, metavar=name.upper(),
                         help=f'(built-in default: {shown})')


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m trainer.task',
      description='Train the wide & deep model on a preprocess output, '
      'evaluate it and export a SavedModel with the transform graph inside.')
  parser.add_argument('--preprocess-dir', required=True,
                      help='output directory of python -m pipeline.preprocess')
  parser.add_argument('--model-dir', required=True,
                      help='where logs/, metrics.json and export/ go')
  parser.add_argument('--distribution-strategy', default='default',
                      choices=distribute.STRATEGIES,
                      help='tf.distribute strategy (default: %(default)s)')
  parser.add_argument('--verbose', type=int, default=2, choices=(0, 1, 2),
                      help='Keras progress: 0 silent, 1 progress bar, 2 one '
                      'line per epoch (default: %(default)s)')
  _add_hparam_flags(parser)
  return parser.parse_args(argv)


def _overrides(args: argparse.Namespace) -> Dict[str, Any]:
  return {name: getattr(args, name) for name in hparams.flag_names()}


def _load_inputs(preprocess_dir: str):
  config_path = os.path.join(preprocess_dir, CONFIG_COPY)
  if not tf.io.gfile.exists(config_path):
    raise UserError(f'--preprocess-dir {preprocess_dir}: no {CONFIG_COPY} '
                    'there; is it the output of python -m pipeline.preprocess?')
  config = load_config(config_path)
  try:
    tft_output = tft.TFTransformOutput(preprocess_dir)
    tft_output.transformed_feature_spec()
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'--preprocess-dir {preprocess_dir}: cannot open the '
                    f'transform output: {e}') from None
  return config, tft_output


class _EpochTimer(keras.callbacks.Callback):
  """Counts epochs actually run (early stopping may end training sooner)."""

  def __init__(self):
    super().__init__()
    self.epochs = 0

  def on_epoch_end(self, epoch, logs=None):
    self.epochs = epoch + 1


def train(config: DatasetConfig, tft_output: tft.TFTransformOutput,
          hp: hparams.HParams, preprocess_dir: str, model_dir: str,
          strategy: tf.distribute.Strategy, chief: bool = True,
          verbose: int = 2):
  """Builds and fits the model; returns (model, features, training summary)."""
  spec = data.feature_spec(tft_output)
  label = config.label.column
  train_files = data.require_files(preprocess_dir, 'train')
  eval_files = data.require_files(preprocess_dir, 'eval')
  train_ds = data.make_dataset(
      train_files, spec, label, hp.batch_size, training=True,
      shuffle_buffer=hp.shuffle_buffer, seed=hp.seed, cache=hp.cache,
      repeat=hp.steps_per_epoch is not None)
  eval_ds = data.make_dataset(eval_files, spec, label, EVAL_BATCH_SIZE,
                              training=False, cache=hp.cache)

  features = model.model_features(config, tft_output, hp)
  with strategy.scope():
    m = model.compile_model(model.build_model(features, hp), hp)

  early = keras.callbacks.EarlyStopping(
      monitor='val_auc', mode='max', patience=hp.early_stopping_patience,
      restore_best_weights=True, verbose=1 if verbose else 0)
  timer = _EpochTimer()
  callbacks = [early, timer]
  if chief:
    callbacks.append(keras.callbacks.TensorBoard(
        log_dir=os.path.join(model_dir, LOGS_DIR), update_freq='epoch',
        profile_batch=0))
  start = time.monotonic()
  history = m.fit(train_ds, validation_data=eval_ds, epochs=hp.epochs,
                  steps_per_epoch=hp.steps_per_epoch, callbacks=callbacks,
                  verbose=verbose)
  seconds = time.monotonic() - start
  val_auc = history.history.get('val_auc', [])
  summary = {
      'seconds': round(seconds, 2),
      'epochs_run': timer.epochs,
      'best_epoch': early.best_epoch + 1 if val_auc else None,
      'best_val_auc_streaming': (float(max(val_auc)) if val_auc else None),
      'replicas': strategy.num_replicas_in_sync,
      'history': {k: [float(v) for v in vals]
                  for k, vals in history.history.items()},
  }
  return m, features, summary


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Trains, evaluates and exports; returns the metrics document."""
  args = parse_args(argv)
  total_start = time.monotonic()
  config, tft_output = _load_inputs(args.preprocess_dir)
  hp = hparams.resolve(config.model, _overrides(args))
  keras.utils.set_random_seed(hp.seed)
  strategy = distribute.make_strategy(args.distribution_strategy)
  chief = distribute.is_chief()
  if chief:
    tf.io.gfile.makedirs(args.model_dir)

  m, features, summary = train(config, tft_output, hp, args.preprocess_dir,
                               args.model_dir, strategy, chief, args.verbose)
  summary['distribution_strategy'] = args.distribution_strategy

  spec = data.feature_spec(tft_output)
  datasets = {}
  for split in ('eval', 'test'):
    files = data.split_files(args.preprocess_dir, split)
    if files:
      datasets[split] = data.make_dataset(
          files, spec, config.label.column, EVAL_BATCH_SIZE, training=False)
  results = evaluate.evaluate_splits(m, datasets, hp.threshold)

  export_dir = export.export_model(
      m, tft_output, config, [f.name for f in features], args.model_dir,
      hp.threshold, extra_metadata={'hparams': hp.to_json()}, write=chief)

  doc = dict(results)
  doc.update({
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'dataset': config.name,
      'positive_class': config.label.positive,
      'threshold': hp.threshold,
      'preprocess_dir': args.preprocess_dir,
      'export_dir': export_dir,
      'training': summary,
      'hparams': hp.to_json(),
      'seconds_total': round(time.monotonic() - total_start, 2),
  })
  if chief:
    evaluate.write_metrics(os.path.join(args.model_dir, evaluate.METRICS_FILE),
                           doc)
  return doc


def main(argv: Optional[Sequence[str]] = None) -> int:
  logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
  try:
    doc = run(argv)
  except UserError as e:
    print(f'trainer: error: {e}', file=sys.stderr)
    return 2
  t = doc['training']
  print(f'\ntrainer: {t["epochs_run"]} epochs in {t["seconds"]:.1f}s '
        f'(best epoch {t["best_epoch"]}, {t["replicas"]} replica(s))')
  print(evaluate.format_table({
      s: doc[s] for s in evaluate.splits_in_order(
          k for k in ('eval', 'test') if k in doc)}))
  print(f'trainer: exported {doc["export_dir"]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
