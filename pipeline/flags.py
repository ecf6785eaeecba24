"""The command lines of the pipeline's commands, without the commands.

Parsing a command line needs nothing but argparse, while the commands
themselves import TensorFlow, TFDV and Beam (5 to 8 s on two cores): each
command parses its flags with this module first (core.cli.parse_first), so
`--help` and a flag mistake are answered at once. The defaults the flags
show live here.
"""

import argparse
from typing import List, Optional, Sequence, Tuple

from core import cli

# pipeline.preprocess
DEFAULT_NUM_SHARDS = 4
DEFAULT_PROGRESS_SECONDS = 10.0
# What the preprocess does on data anomalies (pipeline.validation).
FAIL = 'fail'
WARN = 'warn'
ON_ANOMALIES = (FAIL, WARN)

# pipeline.skew
SKEW_FORMATS = ('auto', 'csv', 'tfrecord', 'jsonl', 'parquet')
DEFAULT_SKEW_REPORT_DIR = 'skew_report'

# pipeline.schema init: rows of the CSV sampled (pipeline.config_draft).
DEFAULT_SAMPLE_ROWS = 100_000


def preprocess(
    argv: Optional[Sequence[str]]) -> Tuple[argparse.Namespace, List[str]]:
  """(flags, Beam pipeline options) of python -m pipeline.preprocess."""
  parser = cli.parser(
      'pipeline.preprocess',
      'Cleanse, split, validate and transform raw tabular data '
      'with Apache Beam and tf.Transform. Unknown flags are passed to Beam as '
      'pipeline options.',
  )
  parser.add_argument(
      '--config',
      required=True,
      help='dataset config YAML, e.g. schemas/census.yaml')
  parser.add_argument(
      '--input', required=True, help='file pattern of the train/eval data')
  parser.add_argument(
      '--test-input',
      default=None,
      help='file pattern of held-out test data (optional)',
  )
  parser.add_argument(
      '--output-dir',
      required=True,
      help='output directory (local path or gs://...)')
  parser.add_argument(
      '--overwrite',
      action='store_true',
      help='replace --output-dir if it already exists',
  )
  parser.add_argument(
      '--num-shards',
      type=int,
      default=DEFAULT_NUM_SHARDS,
      help='TFRecord shards per split (default %(default)s)',
  )
  parser.add_argument(
      '--write-raw',
      action='store_true',
      help='also write the cleansed raw rows of each split as '
      'tf.Examples under raw/',
  )
  parser.add_argument(
      '--schema',
      default=None,
      help='curated TFDV schema (.pbtxt) to validate the '
      "splits against; default: the config's tfdv_schema",
  )
  parser.add_argument(
      '--anomalies',
      choices=ON_ANOMALIES,
      default=FAIL,
      help='on data anomalies: fail (exit 1, output not '
      'published; details kept in OUTPUT_DIR.rejected/) or '
      'warn (report and publish); default %(default)s',
  )
  parser.add_argument(
      '--progress-seconds',
      type=float,
      default=DEFAULT_PROGRESS_SECONDS,
      help='while the job is built, run and checked, print what it is '
      'doing every N seconds (0: never); default %(default)s',
  )
  args, beam_args = parser.parse_known_args(argv)
  if args.num_shards < 1:
    parser.error('--num-shards must be at least 1')
  if not args.progress_seconds >= 0:
    parser.error('--progress-seconds must be 0 or more')
  return args, beam_args


def skew(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  """The flags of python -m pipeline.skew."""
  parser = cli.parser(
      'pipeline.skew', 'Training-serving skew: validate serving data (CSV, '
      'TFRecord, Parquet or the JSON-lines request log) against the training '
      'statistics and the schema of a preprocess run. Exit status: 0 no '
      'anomaly, 1 anomalies, 2 usage or input error.')
  parser.add_argument(
      '--preprocess-dir',
      required=True,
      help='output directory of python -m pipeline.preprocess')
  parser.add_argument(
      '--serving-data',
      required=True,
      help='file pattern of the serving data or request log')
  parser.add_argument(
      '--report-dir',
      default=DEFAULT_SKEW_REPORT_DIR,
      help='where skew.json, skew.html and serving_stats.pb '
      'go (default: ./%(default)s)')
  parser.add_argument(
      '--format',
      choices=SKEW_FORMATS,
      default='auto',
      help='format of the serving data; auto detects it from '
      'the file name, else the content (default)')
  parser.add_argument(
      '--schema',
      default=None,
      help='TFDV schema to use instead of '
      'PREPROCESS_DIR/schema.pbtxt')
  parser.add_argument(
      '--config',
      default=None,
      help='dataset config to parse the serving data with, '
      'instead of PREPROCESS_DIR/config.yaml')
  parser.add_argument(
      '--false-alarm-rate',
      type=_rate,
      default=None,
      help='chance that a check of unchanged data reports '
      'any skew (default: the config\'s '
      'validation.false_alarm_rate, else 0.01)')
  return parser.parse_args(argv)


def _rate(text: str) -> float:
  try:
    rate = float(text)
  except ValueError:
    rate = -1.0
  if not 0 < rate <= 0.5:
    raise argparse.ArgumentTypeError(
        f'{text!r}: expected a probability above 0 and at most 0.5')
  return rate


def schema_parser() -> argparse.ArgumentParser:
  """The parser of python -m pipeline.schema (init, infer, show)."""
  parser = cli.parser(
      'pipeline.schema', 'Start a dataset (init: draft a config and its TFDV '
      'schema from a CSV), draft (infer) and inspect (show) TFDV schemas.')
  sub = parser.add_subparsers(dest='command', required=True)
  p = sub.add_parser(
      'init',
      help='draft a dataset config and its TFDV schema '
      'from a CSV file; unknown flags are Beam pipeline options')
  p.add_argument(
      '--input',
      required=True,
      help='CSV file pattern; the first file is sampled')
  p.add_argument('--label', required=True, help='the label column')
  p.add_argument('--output', required=True, help='config to write (.yaml)')
  p.add_argument(
      '--schema-output',
      default=None,
      help='TFDV schema to write (default: OUTPUT without .yaml '
      '+ _schema.pbtxt)')
  p.add_argument(
      '--name',
      default=None,
      help='dataset name (default: the output file name)')
  p.add_argument(
      '--task',
      default='auto',
      choices=('auto', 'binary', 'multiclass', 'regression'),
      help='default: from the label column (%(default)s)')
  p.add_argument(
      '--delimiter', default=None, help='field delimiter (default: detected)')
  p.add_argument(
      '--header',
      default=None,
      action=argparse.BooleanOptionalAction,
      help='whether the first line names the columns (default: '
      'detected)')
  p.add_argument('--encoding', default='utf-8')
  p.add_argument(
      '--sample-rows',
      type=int,
      default=DEFAULT_SAMPLE_ROWS,
      help='rows sampled to draft the config (default %(default)s)')
  p.add_argument(
      '--overwrite', action='store_true', help='replace existing output files')
  p = sub.add_parser(
      'infer',
      help='draft a TFDV schema from data; unknown '
      'flags are Beam pipeline options')
  p.add_argument('--config', required=True, help='dataset config YAML')
  p.add_argument('--input', required=True, help='file pattern of the data')
  p.add_argument('--output', required=True, help='schema to write (.pbtxt)')
  p.add_argument(
      '--overwrite', action='store_true', help='replace --output if it exists')
  p = sub.add_parser('show', help='print a schema as a table')
  p.add_argument('schema', help='TFDV schema in text format (.pbtxt)')
  return parser


def schema(
    argv: Optional[Sequence[str]]) -> Tuple[argparse.Namespace, List[str]]:
  """(flags, the others: Beam pipeline options for init and infer) of
  python -m pipeline.schema."""
  return schema_parser().parse_known_args(argv)
