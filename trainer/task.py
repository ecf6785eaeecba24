"""python -m trainer.task: train, evaluate and export the wide & deep model.

    python -m trainer.task --preprocess-dir DIR --model-dir MDIR [--epochs N]
        [--batch-size B] [--steps-per-epoch S] [--hidden-units 100,50]
        [--model-type {wide_deep,wide,deep}] [--wide-learning-rate LR]
        [--deep-learning-rate LR] [--class-weight {none,balanced,W}]
        [--oversample SHARE] [--threshold-objective {max_f1,precision,recall,
        fixed}] [--folds K]
        [--distribution-strategy {default,mirrored,multi_worker_mirrored}]
        [--seed N] [...]

Everything dataset-specific is read from DIR: the dataset config the
preprocess job copied there (DIR/config.yaml), the transformed metadata and the
transform graph. Hyperparameters come from the config's `model:` section,
overridden by flags of the same name.

Writes MDIR/logs/ (TensorBoard), MDIR/metrics.json (eval and, when DIR has a
test split, test metrics), MDIR/export/<version>/ (the serving SavedModel) and
MDIR/report.html with its PNGs. The label's task (binary, multiclass,
regression; see trainer/heads.py) decides the model's output, loss and
metrics. Early stopping watches the eval split (AUC for binary labels, cross
entropy for multiclass, RMSE for regression) and restores the best epoch's
weights; a binary model's decision threshold is chosen on the eval split's
predictions; the test split is never looked at before the final evaluation.

With --folds K it instead trains K models on hash folds of train + eval (a
record's fold is a fingerprint of its bytes), each validated, early-stopped and
thresholded on its held-out fold, and writes the per-fold metrics and their
mean and standard deviation (held-out fold, and test when DIR has one) to
MDIR/metrics.json; nothing is exported.
"""

import argparse
import dataclasses
import datetime
import logging
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from pipeline.config import BINARY, MULTICLASS, DatasetConfig, load_config
from pipeline.errors import ConfigError, UserError
from trainer import (data, distribute, evaluate, export, heads, hparams, model,
                     report)

CONFIG_COPY = 'config.yaml'
LOGS_DIR = 'logs'
EVAL_BATCH_SIZE = 2048
# Metrics are also reported at this threshold, whatever the chosen one.
REFERENCE_THRESHOLD = 0.5
REFERENCE_KEY = 'at_threshold_0.5'


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
  parser.add_argument('--folds', type=int, default=0, metavar='K',
                      help='K-fold cross-validation on train + eval instead '
                      'of one run: K models, mean and std of every metric '
                      '(default: one run)')
  _add_hparam_flags(parser)
  args = parser.parse_args(argv)
  if args.folds == 1 or args.folds < 0:
    parser.error('--folds must be at least 2 (or 0 for one run)')
  return args


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


@dataclasses.dataclass(frozen=True)
class Records:
  """Some TFRecord files, optionally narrowed by a record predicate."""
  files: List[str]
  record_filter: Optional[Callable] = None


def _class_weight(hp: hparams.HParams, task: str,
                  counts: Mapping[int, int]) -> Optional[Dict[int, float]]:
  """Keras class weights; 'balanced' gives each class n / (K * n_class)."""
  if hp.class_weight == 'none':
    return None
  if task not in (BINARY, MULTICLASS):
    raise ConfigError(f'model.class_weight: {hp.class_weight!r} weighs '
                      f'classes, but the label task is {task}; use none')
  if hp.class_weight == 'balanced':
    n = sum(counts.values())
    k = len(counts)
    return {c: n / (k * max(counts.get(c, 0), 1)) for c in range(k)}
  if task != BINARY:
    raise ConfigError(f'model.class_weight: {hp.class_weight!r} weighs the '
                      'positive class of a binary label; a multiclass label '
                      'takes balanced or none')
  return {0: 1.0, 1: float(hp.class_weight)}


def _class_counts(config: DatasetConfig,
                  summary: Mapping[str, Any]) -> Dict[int, int]:
  """Rows per class index (0 for classes absent from train)."""
  counts = summary.get('counts', {})
  return {i: int(counts.get(i, 0)) for i in range(len(config.label.classes))}


def train(config: DatasetConfig, tft_output: tft.TFTransformOutput,
          hp: hparams.HParams, preprocess_dir: str, model_dir: str,
          strategy: tf.distribute.Strategy, chief: bool = True,
          verbose: int = 2, train_records: Optional[Records] = None,
          val_records: Optional[Records] = None,
          log_dir: Optional[str] = None):
  """Builds and fits the model; returns (model, features, training summary).

  By default it trains on the train split and validates (early stopping, the
  plateau schedule) on the eval split; K-fold passes other records.
  """
  spec = data.feature_spec(tft_output)
  label = config.label.column
  task = config.label.task
  train_records = train_records or Records(
      data.require_files(preprocess_dir, 'train'))
  val_records = val_records or Records(
      data.require_files(preprocess_dir, 'eval'))
  labels = data.label_summary(train_records.files, spec, label,
                              train_records.record_filter)
  if not labels['rows']:
    raise UserError(f'no training records in {preprocess_dir}')
  head = heads.make_head(config, labels)
  counts = (_class_counts(config, labels) if config.label.is_classification
            else {})
  steps_per_epoch = hp.steps_per_epoch
  minority = 1
  if hp.oversample and task != BINARY:
    raise ConfigError(f'model.oversample: {hp.oversample} oversamples the '
                      f'minority class of a binary label, but the label task '
                      f'is {task}; use 0 (or class_weight: balanced for '
                      'multiclass)')
  if hp.oversample:
    negatives, positives = counts[0], counts[1]
    minority = 1 if positives <= negatives else 0
    majority_rows = max(negatives, positives)
    natural_share = min(negatives, positives) / (negatives + positives)
    if hp.oversample <= natural_share:
      raise ConfigError(
          f'oversample: {hp.oversample} is not above the minority class\' '
          f'share of the training records ({natural_share:.4f}); use a '
          'larger share or 0 (off)')
    # One epoch passes over the majority class about once.
    steps_per_epoch = steps_per_epoch or math.ceil(
        majority_rows / (1.0 - hp.oversample) / hp.batch_size)
  schedule_steps = steps_per_epoch or math.ceil(labels['rows'] /
                                                hp.batch_size)
  class_weight = _class_weight(hp, task, counts)

  train_ds = data.make_dataset(
      train_records.files, spec, label, hp.batch_size, training=True,
      shuffle_buffer=hp.shuffle_buffer, seed=hp.seed, cache=hp.cache,
      repeat=hp.steps_per_epoch is not None,
      record_filter=train_records.record_filter, oversample=hp.oversample,
      minority_label=minority, label_dtype=head.label_dtype)
  eval_ds = data.make_dataset(val_records.files, spec, label, EVAL_BATCH_SIZE,
                              training=False, cache=hp.cache,
                              record_filter=val_records.record_filter,
                              label_dtype=head.label_dtype)

  features = model.model_features(config, tft_output, hp)
  with strategy.scope():
    m = model.compile_model(model.build_model(features, hp, head), hp, head,
                            steps_per_epoch=schedule_steps)

  early = keras.callbacks.EarlyStopping(
      monitor=head.monitor, mode=head.monitor_mode,
      patience=hp.early_stopping_patience,
      restore_best_weights=True, verbose=1 if verbose else 0)
  timer = _EpochTimer()
  callbacks = [early, timer]
  plateau = None
  if hp.lr_schedule == 'plateau':
    plateau = model.ReduceOnPlateau(head.monitor, hp.lr_decay_factor,
                                    hp.lr_patience, hp.lr_min_fraction,
                                    mode=head.monitor_mode)
    callbacks.append(plateau)
  if chief:
    callbacks.append(keras.callbacks.TensorBoard(
        log_dir=log_dir or os.path.join(model_dir, LOGS_DIR),
        update_freq='epoch', profile_batch=0))
  start = time.monotonic()
  history = m.fit(train_ds, validation_data=eval_ds, epochs=hp.epochs,
                  steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                  class_weight=class_weight, verbose=verbose)
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
      'class_weight': ({str(k): v for k, v in class_weight.items()}
                       if class_weight else None),
      'oversample': hp.oversample or None,
      'steps_per_epoch': steps_per_epoch,
      'lr_reduced_after_epochs': plateau.reductions if plateau else None,
      'history': {k: [float(v) for v in vals]
                  for k, vals in history.history.items()},
  }
  if task == BINARY:
    summary['train_label_counts'] = {'negative': counts[0],
                                     'positive': counts[1]}
  elif task == MULTICLASS:
    summary['train_label_counts'] = {
        c: counts[i] for i, c in enumerate(config.label.classes)}
  else:
    summary['train_label'] = {'mean': labels['mean'], 'std': labels['std']}
  return m, features, head, summary


def _eval_datasets(config: DatasetConfig, tft_output, preprocess_dir: str,
                   splits: Sequence[str]) -> Dict[str, tf.data.Dataset]:
  spec = data.feature_spec(tft_output)
  dtype = heads.make_head(config).label_dtype
  datasets = {}
  for split in splits:
    files = data.split_files(preprocess_dir, split)
    if files:
      datasets[split] = data.make_dataset(
          files, spec, config.label.column, EVAL_BATCH_SIZE, training=False,
          label_dtype=dtype)
  return datasets


def _check_slices(config: DatasetConfig, hp: hparams.HParams) -> None:
  allowed = [c.name for c in config.feature_columns]
  for name in hp.slices:
    if name not in allowed:
      raise ConfigError(f'model.slices: {name!r} is not a raw feature column; '
                        f'slice by one of {", ".join(allowed)}')


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Trains, evaluates and exports (or cross-validates); returns the metrics
  document."""
  args = parse_args(argv)
  total_start = time.monotonic()
  config, tft_output = _load_inputs(args.preprocess_dir)
  hp = hparams.resolve(config.model, _overrides(args))
  _check_slices(config, hp)
  keras.utils.set_random_seed(hp.seed)
  strategy = distribute.make_strategy(args.distribution_strategy)
  chief = distribute.is_chief()
  if chief:
    tf.io.gfile.makedirs(args.model_dir)
  if args.folds:
    return run_folds(args, config, tft_output, hp, strategy, chief,
                     total_start)

  m, features, head, summary = train(
      config, tft_output, hp, args.preprocess_dir, args.model_dir, strategy,
      chief, args.verbose)
  summary['distribution_strategy'] = args.distribution_strategy

  predictions = evaluate.predict_splits(
      m, _eval_datasets(config, tft_output, args.preprocess_dir,
                        ('eval', 'test')))
  doc: Dict[str, Any] = {}
  threshold = hp.threshold
  extra = {'hparams': hp.to_json()}
  if head.has_threshold:
    selection = evaluate.choose_threshold(
        *predictions['eval'], hp.threshold_objective, hp.threshold_target,
        hp.threshold)
    selection['split'] = 'eval'
    threshold = selection['threshold']
    extra['threshold_selection'] = selection
    doc.update({
        'positive_class': config.label.positive,
        'threshold': threshold,
        'threshold_selection': selection,
        REFERENCE_KEY: {split: head.metrics(y, p, REFERENCE_THRESHOLD)
                        for split, (y, p) in predictions.items()},
    })
  doc.update({split: head.metrics(y, p, threshold)
              for split, (y, p) in predictions.items()})

  export_dir = export.export_model(
      m, tft_output, config, [f.name for f in features], args.model_dir,
      threshold, extra_metadata=extra, write=chief, head=head)

  doc.update({
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'dataset': config.name,
      'task': config.label.task,
      'preprocess_dir': args.preprocess_dir,
      'export_dir': export_dir,
      'training': summary,
      'hparams': hp.to_json(),
  })
  if chief and head.has_threshold:
    # Per-slice metrics score the raw rows through the export just written.
    doc['slices'] = report.slice_metrics(
        export_dir, args.preprocess_dir, config, hp.slices, hp.slice_buckets,
        threshold, splits=list(predictions))
  if chief:
    doc['report'] = os.path.join(args.model_dir, report.REPORT_FILE)
  doc['seconds_total'] = round(time.monotonic() - total_start, 2)
  if chief:
    evaluate.write_metrics(os.path.join(args.model_dir, evaluate.METRICS_FILE),
                           doc)
    if head.has_threshold:
      report.write_report(args.model_dir, doc, predictions,
                          classes=(head.negative, head.positive))
    else:
      report.write_task_report(args.model_dir, doc, predictions, head)
  return doc


def run_folds(args: argparse.Namespace, config: DatasetConfig,
              tft_output: tft.TFTransformOutput, hp: hparams.HParams,
              strategy: tf.distribute.Strategy, chief: bool,
              total_start: float) -> Dict[str, Any]:
  """K-fold cross-validation over train + eval; returns the metrics doc."""
  k = args.folds
  files = (data.require_files(args.preprocess_dir, 'train') +
           data.require_files(args.preprocess_dir, 'eval'))
  test = _eval_datasets(config, tft_output, args.preprocess_dir, ('test',))
  spec = data.feature_spec(tft_output)
  per_fold = []
  for fold in range(k):
    keras.backend.clear_session()
    keras.utils.set_random_seed(hp.seed)
    held_out = Records(files, data.fold_filter(k, fold, keep=True))
    m, _, head, summary = train(
        config, tft_output, hp, args.preprocess_dir, args.model_dir, strategy,
        chief, args.verbose,
        train_records=Records(files, data.fold_filter(k, fold, keep=False)),
        val_records=held_out,
        log_dir=os.path.join(args.model_dir, LOGS_DIR, f'fold_{fold}'))
    datasets = dict(test)
    datasets['cv'] = data.make_dataset(
        files, spec, config.label.column, EVAL_BATCH_SIZE, training=False,
        record_filter=held_out.record_filter, label_dtype=head.label_dtype)
    predictions = evaluate.predict_splits(m, datasets)
    threshold = hp.threshold
    if head.has_threshold:
      threshold = evaluate.choose_threshold(
          *predictions['cv'], hp.threshold_objective, hp.threshold_target,
          hp.threshold)['threshold']
    entry = {'fold': fold, 'threshold': threshold,
             'epochs_run': summary['epochs_run'],
             'best_epoch': summary['best_epoch'],
             'seconds': summary['seconds'],
             'train_rows': summary['train_rows']}
    for split, (y, p) in predictions.items():
      entry[split] = head.metrics(y, p, threshold)
      if head.has_threshold:
        entry[f'{split}_{REFERENCE_KEY}'] = head.metrics(
            y, p, REFERENCE_THRESHOLD)
    per_fold.append(entry)
    if args.verbose:
      key, title, _ = head.table_rows()[1]
      print(f'trainer: fold {fold + 1}/{k}: held-out {title} '
            f'{entry["cv"][key]:.4f} ({summary["epochs_run"]} epochs, '
            f'{summary["seconds"]:.1f}s)', flush=True)
  sets = ['cv'] + (['test'] if test else [])
  if head.has_threshold:
    sets += [f'{s}_{REFERENCE_KEY}' for s in list(sets)]
  doc = {
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'mode': 'kfold',
      'folds': k,
      'fold_assignment': 'fingerprint of the serialized record modulo K '
                         '(tf.strings.to_hash_bucket_fast), over train + eval',
      'dataset': config.name,
      'task': config.label.task,
      'preprocess_dir': args.preprocess_dir,
      'hparams': hp.to_json(),
      'per_fold': per_fold,
      'summary': {name: evaluate.summarize_folds([f[name] for f in per_fold])
                  for name in sets},
      'summary_other': evaluate.summarize_folds(
          [{key: f[key] for key in ('threshold', 'epochs_run', 'best_epoch',
                                    'seconds', 'train_rows')}
           for f in per_fold]),
      'table_rows': [list(r) for r in head.table_rows()],
      'seconds_total': round(time.monotonic() - total_start, 2),
  }
  if head.has_threshold:
    doc['positive_class'] = config.label.positive
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
  if doc.get('mode') == 'kfold':
    print(f'\ntrainer: {doc["folds"]}-fold cross-validation on train + eval '
          f'in {doc["seconds_total"]:.1f}s')
    print(evaluate.format_fold_table(
        doc['summary'], rows=[tuple(r) for r in doc['table_rows']]))
    return 0
  t = doc['training']
  print(f'\ntrainer: {t["epochs_run"]} epochs in {t["seconds"]:.1f}s '
        f'(best epoch {t["best_epoch"]} by {t["monitor"]}, '
        f'{t["replicas"]} replica(s))')
  order = evaluate.splits_in_order(k for k in ('eval', 'test') if k in doc)
  head = heads.make_head(load_config(os.path.join(doc['preprocess_dir'],
                                                 CONFIG_COPY)))
  if head.has_threshold:
    sel = doc['threshold_selection']
    target = f' {sel["target"]}' if sel.get('target') is not None else ''
    print(f'trainer: threshold {doc["threshold"]:.4f} ({sel["objective"]}'
          f'{target}, chosen on {sel["split"]})')
  print(heads.format_table(head, {s: doc[s] for s in order}))
  if head.has_threshold:
    print(f'at threshold {REFERENCE_THRESHOLD} (reference):')
    print(evaluate.format_table({s: doc[REFERENCE_KEY][s] for s in order}))
  print(f'trainer: exported {doc["export_dir"]}')
  if 'report' in doc:
    print(f'trainer: report {doc["report"]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
