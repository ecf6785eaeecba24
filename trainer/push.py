"""python -m trainer.push: serve a newly trained model only if it is better.

    python -m trainer.push --model-dir MDIR --serving-dir BASE
        [--data PATTERN | --split eval] [--config YAML]
        [--force --reason TEXT]

The candidate is MDIR's newest export; the baseline is the version BASE
serves (its highest). Both score the same labelled raw rows: the raw rows
of the candidate's preprocess split (`--split`, default eval; the preprocess
job writes them with --write-raw), or `--data` files in the dataset's CSV
dialect or raw tf.Examples. The candidate is BLESSED when it meets the
`validation:` section of its dataset config (or of `--config`): absolute
metric rules, no regression against the baseline beyond the allowed change
overall and on the configured slices, and sanity checks (signatures, raw
inputs, finite outputs, latency); see trainer/blessing.py. With no served
model yet, the absolute rules and sanity checks alone decide.

A blessed candidate is copied into BASE as a new version, atomically
(trainer/publish.py), and the server swaps it in at its next poll. The
decision is printed as a table, written to MDIR/blessing.json and into
MDIR/report.html, and appended to BASE/push_log.jsonl, pushed or not.

Exit status: 0 pushed (or already the served model), 1 not blessed (no
version added to BASE; the reasons are printed), 2 bad flags, config or
input. `--force --reason TEXT` pushes a model that is not blessed and
records why.
"""

import argparse
import contextlib
import json
from typing import Any, ContextManager, Dict, Optional, Sequence

from core import cli
from core import quiet
from trainer import flags

if __name__ == '__main__':
  # `--help` and flag mistakes are answered before the imports below.
  cli.parse_first(flags.push, 'push')

# TensorFlow is imported with its start-up noise filtered (core/quiet.py).
with quiet.tensorflow_startup(keras=False):
  import tensorflow as tf

from core.config import load_config
from core.dir_lock import DirLock
from core.errors import InputError
from core.layout import ExportDir
from core.layout import ModelDir
from core.layout import ServingDir
from trainer import blessing
from trainer import blessing_report
from trainer import evaluate
from trainer import labelled_rows
from trainer import publish


def _rows(args: argparse.Namespace, candidate: ExportDir,
          model_dir: ModelDir) -> labelled_rows.LabelledRows:
  if args.data:
    return labelled_rows.from_files(candidate.config, args.data)
  doc = _read_json(model_dir.metrics_path)
  if not doc.get('preprocess_dir'):
    raise InputError(f'{model_dir.metrics_path} does not name the '
                     'preprocess output the model was trained on; give '
                     'labelled rows with --data')
  return labelled_rows.from_split(candidate.config, doc['preprocess_dir'],
                                  args.split)


def _read_json(path: str) -> Dict[str, Any]:
  if not tf.io.gfile.exists(path):
    raise InputError(f'no {path}: the candidate\'s preprocess output is '
                     'unknown; give labelled rows with --data')
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def _same_model(a: ExportDir, b: ExportDir) -> bool:
  """Whether `b` is a pushed copy of `a` (same export metadata)."""
  keys = ('version', 'created', 'config_sha256')
  ma, mb = a.metadata, b.metadata
  return all(ma.get(k) == mb.get(k) for k in keys)


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Validates and (maybe) pushes; returns the decision document with
  'pushed' ({'version', 'path'} or None)."""
  args = flags.push(argv)
  model_dir = ModelDir(args.model_dir)
  # Not while a trainer writes the directory: its newest export could be
  # there before the metrics.json that names its preprocess output. A
  # directory that does not exist is not made (_push says there is no export).
  held: ContextManager[object] = (
      DirLock(model_dir.lock_path, f'--model-dir {args.model_dir}')
      if tf.io.gfile.isdir(model_dir.root) else contextlib.nullcontext())
  with held:
    return _push(args, model_dir)


def _push(args: argparse.Namespace, model_dir: ModelDir) -> Dict[str, Any]:
  candidate = model_dir.latest_export()
  rules = (load_config(args.config)
           if args.config else candidate.config).blessing
  blessing.check_rules(rules, blessing.scoring_head(candidate.config))
  serving = ServingDir(args.serving_dir)
  served = serving.served()
  if served is not None and not served.exists():
    raise InputError(f'{served.path} is not a SavedModel; the serving '
                     'directory holds something else')
  if served is not None and _same_model(candidate, served):
    print(f'push: {candidate.path} is already served as version '
          f'{served.version}; nothing to do')
    return {
        'decision': 'ALREADY_SERVED',
        'pushed': None,
        'served_version': served.version
    }
  rows = _rows(args, candidate, model_dir)
  scored = blessing.score(candidate, rows, rules.latency_batch_rows)
  baseline = (
      blessing.score(served, rows, rules.latency_batch_rows)
      if served is not None else None)
  doc = blessing.decide(rules, rows, scored, baseline)
  doc['time'] = publish.now()
  doc['forced'] = bool(args.force and doc['decision'] != blessing.BLESSED)
  doc['force_reason'] = args.reason if doc['forced'] else None
  pushed = None
  if doc['decision'] == blessing.BLESSED or args.force:
    pushed = publish.publish(candidate, serving)
  doc['pushed'] = pushed
  outcome = blessing_report.outcome_text(pushed, doc['forced'],
                                         doc['force_reason'])
  evaluate.write_metrics(model_dir.blessing_path, doc)
  blessing_report.add_to_report(model_dir.report_path,
                                blessing_report.html_section(doc, outcome))
  publish.append_log(
      serving, {
          'time': doc['time'],
          'action': 'push',
          'decision': doc['decision'],
          'candidate': candidate.path,
          'candidate_version': candidate.version,
          'baseline_version': baseline.export.version if baseline else None,
          'pushed_version': pushed['version'] if pushed else None,
          'forced': doc['forced'],
          'force_reason': doc['force_reason'],
          'reasons': doc['reasons'],
          'data': doc['data'],
          'metrics': blessing_report.summary(doc)
      })
  print(blessing_report.format_text(doc))
  print(f'push: {outcome}')
  return doc


def main(argv: Optional[Sequence[str]] = None) -> int:
  return cli.run('push', lambda: _main(argv))


def _main(argv: Optional[Sequence[str]]) -> int:
  doc = run(argv)
  return cli.OK if doc['pushed'] or doc['decision'] == 'ALREADY_SERVED' \
      else cli.FINDINGS


if __name__ == '__main__':
  quiet.filter_runtime_noise()
  cli.finish(main())
