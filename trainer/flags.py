"""The command lines of the trainer's commands, without the commands.

Parsing a command line needs nothing but argparse, while the commands import
TensorFlow (about 5 s on two cores): each command parses its flags with this
module first (core.cli.parse_first), so `--help` and a flag mistake are
answered at once. The defaults the flags show live here.
"""

import argparse
from typing import Optional, Sequence

from core import cli
from trainer import hparams

# trainer.task --distribution-strategy (trainer.distribute).
STRATEGIES = ('default', 'mirrored', 'multi_worker_mirrored')
# trainer.predict: raw rows per call of the export's signature.
DEFAULT_PREDICT_BATCH_SIZE = 1024


def _add_hparam_flags(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group(
      'hyperparameters',
      "default: the config's model: section, else the "
      'built-in default shown',
  )
  for name, field in hparams.flag_names().items():
    flag = '--' + name.replace('_', '-')
    default = field.default
    shown = ','.join(map(str, default)) if isinstance(default,
                                                      tuple) else default
    if isinstance(default, bool):
      group.add_argument(
          flag,
          dest=name,
          default=None,
          action=argparse.BooleanOptionalAction,
          help=f'(built-in default: {shown})',
      )
    else:
      group.add_argument(
          flag,
          dest=name,
          default=None,
          metavar=name.upper(),
          help=f'(built-in default: {shown})',
      )


def task(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  """The flags of python -m trainer.task."""
  parser = cli.parser(
      'trainer.task',
      'Train the wide & deep model on a preprocess output, '
      'evaluate it and export a SavedModel with the transform graph inside.',
  )
  parser.add_argument(
      '--preprocess-dir',
      required=True,
      help='output directory of python -m pipeline.preprocess',
  )
  parser.add_argument(
      '--model-dir',
      required=True,
      help='where logs/, metrics.json and export/ go')
  parser.add_argument(
      '--distribution-strategy',
      default='default',
      choices=STRATEGIES,
      help='tf.distribute strategy (default: %(default)s)',
  )
  parser.add_argument(
      '--verbose',
      type=int,
      default=2,
      choices=(0, 1, 2),
      help='Keras progress: 0 silent, 1 progress bar, 2 one '
      'line per epoch (default: %(default)s)',
  )
  parser.add_argument(
      '--folds',
      type=int,
      default=0,
      metavar='K',
      help='K-fold cross-validation on train + eval instead '
      'of one run: K models, mean and std of every metric '
      '(default: one run)',
  )
  _add_hparam_flags(parser)
  args = parser.parse_args(argv)
  if args.folds == 1 or args.folds < 0:
    parser.error('--folds must be at least 2 (or 0 for one run)')
  return args


def predict(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  """The flags of python -m trainer.predict."""
  parser = cli.parser(
      'trainer.predict', 'Score raw rows (the dataset\'s CSV dialect) with an '
      'exported model; one JSON line per row.')
  parser.add_argument(
      '--model-dir',
      required=True,
      help='model directory (latest export used) or one '
      'export/<version> directory')
  parser.add_argument(
      '--input', required=True, help='raw CSV file(s): a path or glob pattern')
  parser.add_argument(
      '--output',
      default='-',
      help='JSON lines output file, which appears once every row is scored '
      '(default: stdout)')
  parser.add_argument(
      '--batch-size', type=int, default=DEFAULT_PREDICT_BATCH_SIZE)
  args = parser.parse_args(argv)
  if args.batch_size < 1:
    parser.error('--batch-size must be at least 1')
  return args


def push(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  """The flags of python -m trainer.push."""
  parser = cli.parser(
      'trainer.push', 'Validate MDIR\'s newest export against the model '
      'BASE serves and push it into BASE when it is good enough.')
  parser.add_argument(
      '--model-dir',
      required=True,
      help='model directory of trainer.task; its newest '
      'export is the candidate')
  parser.add_argument(
      '--serving-dir',
      required=True,
      metavar='BASE',
      help='serving directory (TF Serving model base path) '
      'that trainer.serve --model-base-path serves')
  rows = parser.add_mutually_exclusive_group()
  rows.add_argument(
      '--data',
      metavar='PATTERN',
      help='labelled raw rows to score both models on: files '
      'in the dataset\'s CSV dialect, or raw tf.Examples '
      '(*.tfrecord, *.tfrecord.gz)')
  rows.add_argument(
      '--split',
      default='eval',
      help='without --data: the split of the candidate\'s '
      'preprocess output whose raw rows are scored '
      '(default: %(default)s)')
  parser.add_argument(
      '--config',
      metavar='YAML',
      help='take the validation: rules from this dataset '
      'config instead of the one inside the candidate')
  parser.add_argument(
      '--force',
      action='store_true',
      help='push even when the candidate is not blessed '
      '(needs --reason)')
  parser.add_argument(
      '--reason',
      metavar='TEXT',
      help='why a push is forced; recorded in the log')
  args = parser.parse_args(argv)
  if args.force and not (args.reason or '').strip():
    parser.error('--force needs --reason TEXT (it is recorded in the log)')
  if args.reason and not args.force:
    parser.error('--reason goes with --force')
  return args


def rollback(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  """The flags of python -m trainer.rollback."""
  parser = cli.parser(
      'trainer.rollback', 'Make the previous (or the named) version the one '
      'the serving directory serves; nothing is deleted.')
  parser.add_argument(
      '--serving-dir',
      required=True,
      metavar='BASE',
      help='serving directory (TF Serving model base path)')
  parser.add_argument(
      '--to',
      type=int,
      metavar='VERSION',
      help='the version to serve (in service or rolled back '
      'earlier); default: the one below the served version')
  parser.add_argument(
      '--reason', metavar='TEXT', help='why; recorded in the log')
  return parser.parse_args(argv)
