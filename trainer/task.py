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
regression; see trainer/heads/) decides the model's output, loss, metrics,
what is printed and the report's content. Early stopping watches the eval
split (AUC for binary labels, cross entropy for multiclass, RMSE for
regression) and restores the best epoch's weights; a binary model's decision
threshold is chosen on the eval split's predictions; the test split is never
looked at before the final evaluation. This module is the command; training
is trainer/training.py's and the report trainer/report.py's.

With --folds K it instead trains K models on hash folds of train + eval (a
record's fold is a fingerprint of its bytes), each validated, early-stopped and
thresholded on its held-out fold, and writes the per-fold metrics and their
mean and standard deviation (held-out fold, and test when DIR has one) to
MDIR/metrics.json; nothing is exported (trainer/kfold.py).
"""

import argparse
import contextlib
import datetime
import time
from typing import (
    Any,
    Callable,
    ContextManager,
    Dict,
    Mapping,
    Optional,
    Sequence,
)

from core import cli
from core import quiet
from trainer import flags

if __name__ == '__main__':
  # `--help` and flag mistakes are answered before the imports below.
  cli.parse_first(flags.task, 'trainer')

# TensorFlow is imported with its start-up noise filtered (core/quiet.py).
with quiet.tensorflow_startup():
  import tensorflow as tf
  import tensorflow_transform as tft
  import tf_keras as keras

from core import heap
from core.config import DatasetConfig
from core.dir_lock import DirLock
from core.errors import ConfigError
from core.errors import InputError
from core.errors import UserError
from core.layout import ModelDir
from core.layout import PreprocessOutput
from trainer import distribute
from trainer import evaluate
from trainer import export
from trainer import hparams
from trainer import kfold
from trainer import plots
from trainer import report
from trainer import training


def _overrides(args: argparse.Namespace) -> Dict[str, Any]:
  return {name: getattr(args, name) for name in hparams.flag_names()}


def _load_inputs(preprocess_dir: str):
  try:
    config = PreprocessOutput(preprocess_dir).config
  except InputError as e:
    raise UserError(f'--preprocess-dir {e}') from None
  try:
    tft_output = tft.TFTransformOutput(preprocess_dir)
    tft_output.transformed_feature_spec()
  except Exception as e:  # noqa: BLE001 - the user's directory is not readable
    raise UserError(f'--preprocess-dir {preprocess_dir}: cannot open the '
                    f'transform output: {e}') from None
  return config, tft_output


def _check_slices(config: DatasetConfig, hp: hparams.HParams) -> None:
  allowed = [c.name for c in config.feature_columns]
  for name in hp.slices:
    if name not in allowed:
      raise ConfigError(f'model.slices: {name!r} is not a raw feature column; '
                        f'slice by one of {", ".join(allowed)}')


def run(argv: Optional[Sequence[str]] = None,
        say: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
  """Trains, evaluates and exports (or cross-validates); returns the metrics
    document.

    `say` gets a line as each step of a single run ends (the fit, the
    evaluation with its results, the export, the metrics through the
    export, the report), so that the command shows its results while the
    later steps run instead of all of them at the end.
    """
  say = say or (lambda line: None)
  args = flags.task(argv)
  total_start = time.monotonic()
  config, tft_output = _load_inputs(args.preprocess_dir)
  hp = hparams.resolve(config.model, _overrides(args))
  _check_slices(config, hp)
  keras.utils.set_random_seed(hp.seed)
  strategy = distribute.make_strategy(args.distribution_strategy)
  chief = distribute.is_chief()
  held: ContextManager[object] = contextlib.nullcontext()
  if chief:
    tf.io.gfile.makedirs(args.model_dir)
    # One trainer at a time: two in one directory would each publish an
    # export and leave metrics.json and the report of whichever ended last.
    held = DirLock(
        ModelDir(args.model_dir).lock_path, f'--model-dir {args.model_dir}')
  with held:
    return _train(args, config, tft_output, hp, strategy, chief, total_start,
                  say)


def _train(args: argparse.Namespace, config: DatasetConfig,
           tft_output: tft.TFTransformOutput, hp: hparams.HParams,
           strategy: tf.distribute.Strategy, chief: bool, total_start: float,
           say: Callable[[str], None]) -> Dict[str, Any]:
  """run() once the inputs are checked (and, on the chief, the model
  directory held)."""
  if args.folds:
    return kfold.run_folds(
        config,
        tft_output,
        hp,
        args.preprocess_dir,
        args.model_dir,
        args.folds,
        strategy,
        chief,
        args.verbose,
        total_start,
    )

  m, features, head, summary = training.train(
      config,
      tft_output,
      hp,
      args.preprocess_dir,
      args.model_dir,
      strategy,
      chief,
      args.verbose,
  )
  summary['distribution_strategy'] = args.distribution_strategy
  say(_fit_line(summary))

  started = time.monotonic()
  # The model's call traced for the transformed features once, for the
  # splits' scoring and the export.
  scoring = evaluate.ScoringSteps(m)
  predictions = evaluate.predict_splits(
      m,
      training.eval_datasets(config, tft_output, args.preprocess_dir,
                             ('eval', 'test')),
      scoring,
  )
  evaluation = head.evaluate(predictions, hp)
  say(_took(f'scored {_rows(predictions)} with the trained model', started))
  say(
      head.format_results(evaluation.metrics,
                          evaluate.splits_in_order(predictions)))

  doc: Dict[str, Any] = dict(evaluation.metrics)
  doc.update(head.label_fields())
  doc.update({
      'created':
          datetime.datetime.now(datetime.timezone.utc
                               ).isoformat(timespec='seconds'),
      'dataset':
          config.name,
      'task':
          config.label.task,
      'preprocess_dir':
          args.preprocess_dir,
      'training':
          summary,
      'hparams':
          hp.to_json(),
  })
  # The report's figures need only the metrics and the history: a child
  # draws them while this process exports and scores through the export.
  with (plots.Drawing(report.figures(args.model_dir, doc, predictions, head))
        if chief else contextlib.nullcontext()) as drawing:
    started = time.monotonic()
    doc['export_dir'] = export.export_model(
        m,
        tft_output,
        config,
        [f.name for f in features],
        args.model_dir,
        evaluation.threshold,
        extra_metadata=dict({'hparams': hp.to_json()}, **evaluation.metadata),
        write=chief,
        head=head,
        scoring=scoring,
    )
    say(_took(f'exported {doc["export_dir"]}', started))
    if drawing is not None:
      started = time.monotonic()
      through_export = head.metrics_through_export(
          doc['export_dir'],
          args.preprocess_dir,
          hp,
          evaluation.threshold,
          list(predictions),
      )
      doc.update(through_export)
      if through_export:
        say(
            _took(
                f'raw {" and ".join(predictions)} rows scored through the '
                f'export ({", ".join(sorted(through_export))})', started))
      doc['report'] = ModelDir(args.model_dir).report_path
    doc['seconds_total'] = round(time.monotonic() - total_start, 2)
    if drawing is not None:
      started = time.monotonic()
      evaluate.write_metrics(ModelDir(args.model_dir).metrics_path, doc)
      report.write_report(args.model_dir, doc, head, drawing.result())
      say(_took(f'report {doc["report"]}', started))
  return doc


def _fit_line(summary: Mapping[str, Any]) -> str:
  return (f'\ntrainer: {summary["epochs_run"]} epochs in '
          f'{summary["seconds"]:.1f}s (best epoch {summary["best_epoch"]} by '
          f'{summary["monitor"]}, {summary["replicas"]} replica(s))')


def _rows(predictions: Mapping[str, Any]) -> str:
  """'eval (6,511 rows) and test (16,281 rows)'."""
  return ' and '.join(
      f'{split} ({len(labels):,} rows)' for split, (labels,
                                                    _) in predictions.items())


def _took(what: str, started: float) -> str:
  return f'trainer: {what} in {time.monotonic() - started:.1f} s'


def main(argv: Optional[Sequence[str]] = None) -> int:
  return cli.run('trainer', lambda: _main(argv))


def _main(argv: Optional[Sequence[str]]) -> int:
  doc = run(argv, say=lambda line: print(line, flush=True))
  if doc.get('mode') == 'kfold':
    print(f'\ntrainer: {doc["folds"]}-fold cross-validation on train + eval '
          f'in {doc["seconds_total"]:.1f}s')
    print(
        evaluate.format_fold_table(
            doc['summary'], rows=[tuple(r) for r in doc['table_rows']]))
  return 0


if __name__ == '__main__':
  quiet.filter_runtime_noise()
  heap.freeze_imports()
  cli.finish(main())
