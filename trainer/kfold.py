"""K-fold cross-validation over train + eval (trainer.task --folds K).

K models are trained on hash folds of the train and eval records together (a
record's fold is a fingerprint of its bytes, data.fold_filter), each
validated, early-stopped and, for a binary label, thresholded on its held-out
fold. The metrics document holds every fold's metrics (held-out fold, and
test when the preprocess output has one) and their mean and standard
deviation; nothing is exported.
"""

import datetime
import time
from typing import Any, Dict

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from core.config import DatasetConfig
from core.layout import join
from core.layout import ModelDir
from core.layout import PreprocessOutput
from trainer import data
from trainer import evaluate
from trainer import hparams
from trainer import training

HELD_OUT = 'cv'  # the metric set of each fold's held-out records


def run_folds(config: DatasetConfig, tft_output: tft.TFTransformOutput,
              hp: hparams.HParams, preprocess_dir: str, model_dir: str,
              folds: int, strategy: tf.distribute.Strategy, chief: bool,
              verbose: int, total_start: float) -> Dict[str, Any]:
  """Trains and scores `folds` models; writes MDIR/metrics.json (on the
  chief) and returns the metrics document."""
  files = (
      PreprocessOutput(preprocess_dir).require_data_files('train') +
      PreprocessOutput(preprocess_dir).require_data_files('eval'))
  test = training.eval_datasets(config, tft_output, preprocess_dir, ('test',))
  per_fold = []
  for fold in range(folds):
    keras.backend.clear_session()
    keras.utils.set_random_seed(hp.seed)
    held_out = training.Records(files, data.fold_filter(folds, fold, True))
    m, _, head, summary = training.train(
        config,
        tft_output,
        hp,
        preprocess_dir,
        model_dir,
        strategy,
        chief,
        verbose,
        train_records=training.Records(files,
                                       data.fold_filter(folds, fold, False)),
        val_records=held_out,
        log_dir=join(ModelDir(model_dir).logs_dir, f'fold_{fold}'))
    datasets = dict(test)
    datasets[HELD_OUT] = training.eval_dataset(config, tft_output, held_out)
    predictions = evaluate.predict_splits(m, datasets)
    entry = {
        'fold': fold,
        'epochs_run': summary['epochs_run'],
        'best_epoch': summary['best_epoch'],
        'seconds': summary['seconds'],
        'train_rows': summary['train_rows']
    }
    entry.update(head.fold_metrics(predictions, hp, HELD_OUT))
    per_fold.append(entry)
    if verbose:
      key, title, _ = head.table_rows()[1]
      print(
          f'trainer: fold {fold + 1}/{folds}: held-out {title} '
          f'{entry[HELD_OUT][key]:.4f} ({summary["epochs_run"]} epochs, '
          f'{summary["seconds"]:.1f}s)',
          flush=True)
  sets = head.fold_sets([HELD_OUT] + (['test'] if test else []))
  doc = {
      'created':
          datetime.datetime.now(datetime.timezone.utc
                               ).isoformat(timespec='seconds'),
      'mode':
          'kfold',
      'folds':
          folds,
      'fold_assignment':
          'fingerprint of the serialized record modulo K '
          '(tf.strings.to_hash_bucket_fast), over train + eval',
      'dataset':
          config.name,
      'task':
          config.label.task,
      'preprocess_dir':
          preprocess_dir,
      'hparams':
          hp.to_json(),
      'per_fold':
          per_fold,
      'summary': {
          name: evaluate.summarize_folds([f[name] for f in per_fold])
          for name in sets
      },
      'summary_other':
          evaluate.summarize_folds([{
              key: f[key] for key in ('threshold', 'epochs_run', 'best_epoch',
                                     'seconds', 'train_rows')
          } for f in per_fold]),
      'table_rows': [list(r) for r in head.table_rows()],
      'seconds_total':
          round(time.monotonic() - total_start, 2),
  }
  doc.update(head.label_fields())
  if chief:
    evaluate.write_metrics(ModelDir(model_dir).metrics_path, doc)
  return doc
