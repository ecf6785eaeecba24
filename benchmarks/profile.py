"""Where the fixed time of the two commands goes, phase by phase, on UCI Adult.

    .venv/bin/python -m benchmarks.profile [--adult-dir DIR] [--repeat N]
        [--trees LABEL=DIR,LABEL=DIR] [--skip-train] [--work-dir DIR]
        [--json FILE]

Runs the real commands as a user does, each in a fresh interpreter:

  python -m pipeline.preprocess --config schemas/census.yaml
      --input adult.data --test-input adult.test --output-dir W/preprocess
      --overwrite --write-raw
  python -m trainer.task --preprocess-dir W/preprocess --model-dir W/model

and times, from inside that interpreter, the phases a user waits for. Each
phase is the outermost call of one function, timed by wrapping it (the wrap
changes no argument and no result); a count says how often it ran:

  preprocess  interpreter start-up, imports, building the Beam graph (the
              preprocessing_fn traces, the DoFn pickling), the pipeline
              run (the graph's proto, bundle processors set up, bundles
              run), the tf.Transform SavedModels (TF1 graphs: written
              unbound while the graph is built, bound in the run), the
              wall seconds of each fused stage the runner ran (named by
              its first transform; stages under half a second in every
              tree are summed into one row), the stages' worker seconds
              from the job's manifest, the checks after the job
  train       interpreter start-up, imports, the label pass, datasets,
              model build, the first epoch (tracing) and the later ones,
              AutoGraph conversions, evaluation, export, the metrics through
              the export, the report (where a child draws its PNGs while
              the export runs: the wait for them, and the writing)

With --trees the same runs are made for several copies of the code (e.g. a
checkout before and after a change), alternating between them on every
repeat so that both see the same machine load; the table shows the median
of each phase per tree. The machine's load average is printed before and
after: on a shared machine compare the trees of one invocation, not
figures of separate ones. CPU seconds (user + system of the process) are
less sensitive to other load than wall seconds and are shown for the whole
command. Nothing is asserted. Linux only (reads /proc/loadavg).
"""

import argparse
import functools
import importlib
import json
import os
import pathlib
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = 'schemas/census.yaml'

# ------------------------------------------------------------------ the child
# (runs inside the measured interpreter; imports only what it wraps)


class _Phases:
  """Seconds and calls of the outermost call of each wrapped function."""

  def __init__(self):
    self.seconds: Dict[str, float] = {}
    self.calls: Dict[str, int] = {}
    self.marks: Dict[str, float] = {}
    self._depth: Dict[str, int] = {}

  def wrap(self, owner: Any, attribute: str, phase: str) -> None:
    original = getattr(owner, attribute)

    @functools.wraps(original)
    def timed(*args, **kwargs):
      depth = self._depth.get(phase, 0)
      self._depth[phase] = depth + 1
      start = time.monotonic()
      try:
        return original(*args, **kwargs)
      finally:
        self._depth[phase] = depth
        if not depth:
          self.seconds[phase] = (
              self.seconds.get(phase, 0.0) + time.monotonic() - start)
          self.calls[phase] = self.calls.get(phase, 0) + 1

    setattr(owner, attribute, timed)

  def wrap_path(self, module: str, path: str, phase: str) -> None:
    """Wraps `module`.`path` (a function or Class.method) if it exists."""
    try:
      owner = importlib.import_module(module)
    except ImportError:
      return
    *parents, attribute = path.split('.')
    for name in parents:
      owner = getattr(owner, name, None)
      if owner is None:
        return
    if hasattr(owner, attribute):
      self.wrap(owner, attribute, phase)


_PREPROCESS_WRAPS = (
    ('pipeline.preprocess', 'build_pipeline', 'build_graph'),
    (
        # tf.Transform in TF1 mode (pipeline/preprocess.py): each phase's
        # graph is written unbound while the Beam graph is built, and bound
        # to its analyzers' results in the run.
        'tensorflow_transform.saved.saved_transform_io',
        'write_saved_transform_from_session',
        'tf.Transform SavedModels written (built, then bound)',
    ),
    (
        'tensorflow_transform.impl_helper',
        'trace_preprocessing_function',
        'build_graph: tf.Transform analysis graph traced',
    ),
    (
        'apache_beam.internal.pickler',
        'dumps',
        'Beam: pickling (DoFns, coders, functions)',
    ),
    (
        'apache_beam.pipeline',
        'Pipeline.to_runner_api',
        'Beam: pipeline to proto (runner API)',
    ),
    ('apache_beam.pipeline', 'Pipeline.run', 'run_pipeline'),
    (
        'apache_beam.runners.worker.bundle_processor',
        'BundleProcessor.__init__',
        'run_pipeline: stage set-up (bundle processors, DoFn setup)',
    ),
    (
        'apache_beam.runners.worker.bundle_processor',
        'BundleProcessor.process_bundle',
        'run_pipeline: bundles processed',
    ),
    ('pipeline.feature_warnings', 'check_preprocessed', 'feature checks'),
    ('pipeline.validation', 'validate_output', 'validation (TFDV, drift)'),
)

_TRAIN_WRAPS = (
    ('trainer.data', 'label_summary', 'label pass (train labels)'),
    ('trainer.data', 'make_dataset', 'tf.data pipelines built'),
    ('trainer.model', 'build_model', 'model built'),
    ('trainer.model', 'compile_model', 'model compiled'),
    ('tf_keras', 'Model.fit', 'fit'),
    ('trainer.evaluate', 'predict_splits', 'evaluation (eval + test scored)'),
    ('trainer.export', 'export_model', 'export (SavedModel + signatures)'),
    ('trainer.report', 'write_report', 'report (HTML + PNGs)'),
    ('trainer.plots', 'Drawing.result',
     'report: waiting for the PNGs (drawn in a child)'),
)

_TF_WRAPS = (
    (
        'tensorflow.python.eager.polymorphic_function.tracing_compilation',
        '_create_concrete_function',
        'TensorFlow: functions traced',
    ),
    (
        'tensorflow.python.autograph.pyct.transpiler',
        'GenericTranspiler.transform_function',
        'TensorFlow: AutoGraph conversions',
    ),
)


def _count_preprocessing_fn_traces(phases: _Phases) -> None:
  """Counts each call of the job's preprocessing_fn (one per trace)."""
  import pipeline.preprocess as command  # pylint: disable=g-import-not-at-top

  make = command.make_preprocessing_fn

  def counted_make(config):
    fn = make(config)
    holder = type('Holder', (), {'fn': staticmethod(fn)})
    phases.wrap(holder, 'fn', 'build_graph: preprocessing_fn traces')
    return holder.fn

  command.make_preprocessing_fn = counted_make


STAGE_PREFIX = 'stage: '
_STAGE_OTHERS = STAGE_PREFIX + 'all other stages'
# A stage shown on a row of its own takes at least this long in some tree.
_STAGE_ROW_SECONDS = 0.5


def stage_label(stage_name: str) -> str:
  """A fused stage's first transform, as its first three path components.

  The FnApiRunner names a fused stage by nesting the names of what it fused,
  e.g. '((ref_PCollection_PCollection_14/Read)+(ref_AppliedPTransform_Split-
  AssignSplit-ParDo-_AssignSplitFn-_40))+...'; the first applied transform
  names the stage's work (here 'Split/AssignSplit/ParDo'), falling back to
  the first name when the stage has none.
  """
  names = [n for n in re.split(r'[()+]+', stage_name) if n]
  if not names:
    return stage_name
  applied = [n for n in names if n.startswith('ref_AppliedPTransform_')]
  if applied:
    name = applied[0][len('ref_AppliedPTransform_'):]
    name = re.sub(r'_\d+$', '', name)
    parts = name.split('-')
  else:
    parts = names[0].split('/')
  return '/'.join(p for p in parts[:3] if p)


def _time_stages(phases: _Phases) -> None:
  """Wall seconds of every bundle the FnApiRunner runs, by stage label."""
  # pylint: disable=g-import-not-at-top
  from apache_beam.runners.portability.fn_api_runner import fn_runner

  original = fn_runner.FnApiRunner._execute_bundle  # pylint: disable=protected-access

  @functools.wraps(original)
  def timed(self, context, bundle_context_manager, bundle_input):
    start = time.monotonic()
    try:
      return original(self, context, bundle_context_manager, bundle_input)
    finally:
      phase = STAGE_PREFIX + stage_label(bundle_context_manager.stage.name)
      phases.seconds[phase] = (
          phases.seconds.get(phase, 0.0) + time.monotonic() - start)
      phases.calls[phase] = phases.calls.get(phase, 0) + 1

  fn_runner.FnApiRunner._execute_bundle = timed  # pylint: disable=protected-access


def fold_small_stages(
    runs: Dict[str, List[Dict[str, Any]]]) -> Dict[str, List[Dict[str, Any]]]:
  """The runs with the stages shorter than _STAGE_ROW_SECONDS (median, in
  every tree) summed into one 'all other stages' phase per run."""
  medians: Dict[str, float] = {}
  for label_runs in runs.values():
    names = {n for r in label_runs for n in r['seconds']}
    for name in names:
      if name.startswith(STAGE_PREFIX):
        median = statistics.median(
            [r['seconds'].get(name, 0.0) for r in label_runs])
        medians[name] = max(medians.get(name, 0.0), median)
  small = {n for n, m in medians.items() if m < _STAGE_ROW_SECONDS}
  folded: Dict[str, List[Dict[str, Any]]] = {}
  for label, label_runs in runs.items():
    folded[label] = []
    for run in label_runs:
      seconds = {n: v for n, v in run['seconds'].items() if n not in small}
      calls = {n: v for n, v in run['calls'].items() if n not in small}
      if small:
        seconds[_STAGE_OTHERS] = sum(
            v for n, v in run['seconds'].items() if n in small)
        calls[_STAGE_OTHERS] = sum(
            v for n, v in run['calls'].items() if n in small)
      folded[label].append(dict(run, seconds=seconds, calls=calls))
  return folded


def _time_epochs(phases: _Phases) -> None:
  """Epoch end times, through the trainer's own epoch counter callback."""
  import trainer.training as training  # pylint: disable=g-import-not-at-top

  timer = training._EpochTimer  # pylint: disable=protected-access
  original = timer.on_epoch_end

  def on_train_begin(self, logs=None):
    del self, logs
    phases.marks['fit_start'] = time.monotonic()

  def on_epoch_end(self, epoch, logs=None):
    phases.marks.setdefault('epoch_ends', []).append(time.monotonic())
    return original(self, epoch, logs)

  timer.on_train_begin = on_train_begin
  timer.on_epoch_end = on_epoch_end


def _wrap_heads(phases: _Phases) -> None:
  import pkgutil  # pylint: disable=g-import-not-at-top

  import trainer.heads as heads  # pylint: disable=g-import-not-at-top

  for info in pkgutil.iter_modules(heads.__path__):
    module = importlib.import_module(f'trainer.heads.{info.name}')
    for value in list(vars(module).values()):
      if (isinstance(value, type) and value.__module__ == module.__name__ and
          'metrics_through_export' in vars(value)):
        phases.wrap(
            value,
            'metrics_through_export',
            'metrics through the export (raw rows, slices)',
        )


def _freeze_imports_as_the_command_does() -> None:
  """What the command's `__main__` block does before main(), in a tree
  whose commands do it (core.heap); older trees froze nothing."""
  try:
    heap = importlib.import_module('core.heap')
  except ImportError:
    return
  heap.freeze_imports()


def _child(command: str, argv: List[str], out: str, launched: float) -> int:
  started = time.time()
  phases = _Phases()
  phases.seconds['interpreter start-up'] = started - launched
  t = time.monotonic()
  module = importlib.import_module('pipeline.preprocess' if command ==
                                   'preprocess' else 'trainer.task')
  phases.seconds['imports'] = time.monotonic() - t
  for wraps in (
      _TF_WRAPS,
      _PREPROCESS_WRAPS if command == 'preprocess' else _TRAIN_WRAPS,
  ):
    for name, path, phase in wraps:
      phases.wrap_path(name, path, phase)
  if command == 'preprocess':
    _count_preprocessing_fn_traces(phases)
    _time_stages(phases)
  else:
    _time_epochs(phases)
    _wrap_heads(phases)
  t = time.monotonic()
  _freeze_imports_as_the_command_does()
  code = module.main(argv)
  phases.seconds['main'] = time.monotonic() - t
  ends = phases.marks.get('epoch_ends', [])
  if ends:
    phases.seconds['fit: first epoch'] = ends[0] - phases.marks['fit_start']
    phases.calls['fit: first epoch'] = 1
    if len(ends) > 1:
      phases.seconds['fit: later epochs'] = ends[-1] - ends[0]
      phases.calls['fit: later epochs'] = len(ends) - 1
  usage = resource.getrusage(resource.RUSAGE_SELF)
  phases.seconds[
      'CPU seconds (user + system)'] = usage.ru_utime + usage.ru_stime
  with open(out, 'w', encoding='utf-8') as f:
    json.dump(
        {
            'exit_code': code,
            'seconds': phases.seconds,
            'calls': phases.calls
        }, f)
  return code


# ----------------------------------------------------------------- the parent


def _load() -> str:
  with open('/proc/loadavg', encoding='ascii') as f:
    return ' '.join(f.read().split()[:3])


def _find_adult_dir() -> Optional[str]:
  for d in (
      os.environ.get('ADULT_DATA_DIR', ''),
      str(ROOT.parent / 'shared' / 'data' / 'census'),
      str(ROOT / 'data' / 'census'),
  ):
    if d and all(
        os.path.exists(os.path.join(d, n))
        for n in ('adult.data', 'adult.test')):
      return d
  return None


def _run_child(tree: str, command: str, argv: List[str],
               work: str) -> Dict[str, Any]:
  """One command in a fresh interpreter on the code in `tree`."""
  out = os.path.join(work, f'{command}-{uuid.uuid4().hex}.json')
  env = dict(os.environ, PYTHONPATH=tree)
  # This file runs as __main__ through runpy: run as a script, its folder
  # would come first on sys.path and shadow the standard `profile` module.
  child = [
      os.path.abspath(__file__),
      '--child',
      command,
      '--child-out',
      out,
      '--launched',
  ]
  start = time.time()
  proc = subprocess.run(
      [
          sys.executable,
          '-c',
          'import runpy, sys; sys.argv = sys.argv[1:]; '
          'runpy.run_path(sys.argv[0], run_name="__main__")',
      ] + child + [repr(start), '--'] + argv,
      cwd=tree,
      env=env,
      capture_output=True,
      text=True,
      check=False,
  )
  wall = time.time() - start
  if proc.returncode != 0 or not os.path.exists(out):
    raise SystemExit(f'profile: {command} in {tree} failed (exit '
                     f'{proc.returncode}):\n{proc.stderr[-4000:]}')
  with open(out, encoding='utf-8') as f:
    result = json.load(f)
  os.remove(out)
  result['seconds']['whole command (wall)'] = wall
  result['stderr_lines'] = len(proc.stderr.splitlines())
  return result


def _preprocess_argv(adult_dir: str, out: str) -> List[str]:
  return [
      '--config',
      CONFIG,
      '--input',
      os.path.join(adult_dir, 'adult.data'),
      '--test-input',
      os.path.join(adult_dir, 'adult.test'),
      '--output-dir',
      out,
      '--overwrite',
      '--write-raw',
  ]


def _add_manifest_stages(result: Dict[str, Any], out: str) -> None:
  with open(os.path.join(out, 'manifest.json'), encoding='utf-8') as f:
    seconds = json.load(f).get('seconds', {})
  for key, value in seconds.items():
    if key.startswith('stage_'):
      result['seconds'][f'worker seconds: {key[len("stage_"):]}'] = value


_ORDER = {
    'preprocess': [
        'whole command (wall)',
        'CPU seconds (user + system)',
        'interpreter start-up',
        'imports',
        'build_graph',
        'build_graph: preprocessing_fn traces',
        'build_graph: tf.Transform analysis graph traced',
        'Beam: pickling (DoFns, coders, functions)',
        'Beam: pipeline to proto (runner API)',
        'run_pipeline',
        'tf.Transform SavedModels written (built, then bound)',
        'run_pipeline: stage set-up (bundle processors, DoFn setup)',
        'run_pipeline: bundles processed',
        'TensorFlow: functions traced',
        'TensorFlow: AutoGraph conversions',
    ],
    'train': [
        'whole command (wall)',
        'CPU seconds (user + system)',
        'interpreter start-up',
        'imports',
        'label pass (train labels)',
        'tf.data pipelines built',
        'model built',
        'model compiled',
        'fit',
        'fit: first epoch',
        'fit: later epochs',
        'TensorFlow: functions traced',
        'TensorFlow: AutoGraph conversions',
        'evaluation (eval + test scored)',
        'export (SavedModel + signatures)',
        'metrics through the export (raw rows, slices)',
        'report (HTML + PNGs)',
        'report: waiting for the PNGs (drawn in a child)',
    ],
}


def _table(command: str, runs: Dict[str, List[Dict[str, Any]]]) -> str:
  runs = fold_small_stages(runs)
  labels = list(runs)
  names = list(_ORDER[command])
  stages = set()
  for label in labels:
    for run in runs[label]:
      for name in list(run['seconds']) + list(run['calls']):
        if name.startswith(STAGE_PREFIX):
          stages.add(name)
        elif name not in names and name != 'main':
          names.append(name)

  def slowest_first(name):
    return (name == _STAGE_OTHERS, -max(
        statistics.median([r['seconds'].get(name, 0.0)
                           for r in runs[label]])
        for label in labels))

  # The stages go right after the pipeline run they are part of.
  at = (
      names.index('run_pipeline: bundles processed') +
      1 if 'run_pipeline: bundles processed' in names else len(names))
  names[at:at] = sorted(stages, key=slowest_first)
  head = ['phase'] + [f'{label} s (calls)' for label in labels]
  rows = []
  for name in names:
    cells = [name]
    for label in labels:
      values = [r['seconds'][name] for r in runs[label] if name in r['seconds']]
      calls = [r['calls'][name] for r in runs[label] if name in r['calls']]
      if not values:
        cells.append('-')
        continue
      cell = f'{statistics.median(values):.1f}'
      if calls:
        cell += f' ({int(statistics.median(calls))})'
      cells.append(cell)
    rows.append(cells)
  stderr = [
      str(int(statistics.median([r['stderr_lines']
                                 for r in runs[label]])))
      for label in labels
  ]
  rows.append(['stderr lines printed'] + stderr)
  widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]

  def fmt(r):
    return '  '.join(
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(r, widths)))

  return '\n'.join([fmt(head), fmt(['-' * w for w in widths])] +
                   [fmt(r) for r in rows])


def _parse_trees(text: str) -> List[Tuple[str, str]]:
  trees = []
  for item in text.split(','):
    label, _, path = item.partition('=')
    if not path:
      label, path = os.path.basename(os.path.abspath(item)) or 'tree', item
    trees.append((label, os.path.abspath(path)))
  return trees


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m benchmarks.profile', description=__doc__.splitlines()[0])
  parser.add_argument(
      '--adult-dir',
      default=None,
      help='directory with adult.data and adult.test '
      '(default: ../shared/data/census or data/census)',
  )
  parser.add_argument(
      '--trees',
      default=f'current={ROOT}',
      help='LABEL=DIR,... copies of the code to compare '
      '(default: this checkout)',
  )
  parser.add_argument('--repeat', type=int, default=1)
  parser.add_argument('--skip-train', action='store_true')
  parser.add_argument(
      '--work-dir',
      default=None,
      help='where the runs write their outputs, kept (default: a temporary '
      'directory, removed at the end)')
  parser.add_argument('--json', default=None)
  parser.add_argument(
      '--child', choices=('preprocess', 'train'), help=argparse.SUPPRESS)
  parser.add_argument('--child-out', help=argparse.SUPPRESS)
  parser.add_argument('--launched', type=float, help=argparse.SUPPRESS)
  args, rest = parser.parse_known_args(argv)
  if args.child:
    if rest and rest[0] == '--':
      rest = rest[1:]
    return _child(args.child, rest, args.child_out, args.launched)

  adult_dir = args.adult_dir or _find_adult_dir()
  if not adult_dir:
    parser.error('UCI Adult not found: give --adult-dir or run `make data`')
  trees = _parse_trees(args.trees)
  if args.work_dir:
    os.makedirs(args.work_dir, exist_ok=True)
    return _profile(args, adult_dir, trees, args.work_dir)
  # The outputs of every run (preprocessed data, models) are only measured.
  with tempfile.TemporaryDirectory(prefix='profile-') as work:
    return _profile(args, adult_dir, trees, work)


def _profile(args: argparse.Namespace, adult_dir: str,
             trees: List[Tuple[str, str]], work: str) -> int:
  """Runs the commands of every tree in `work` and prints the tables."""
  commands = ['preprocess'] + ([] if args.skip_train else ['train'])
  runs: Dict[str, Dict[str, List[Dict[str, Any]]]] = {
      c: {
          label: [] for label, _ in trees
      } for c in commands
  }
  load_before = _load()
  print(
      f'profile: load average {load_before} (1, 5, 15 min) before; '
      f'{len(os.sched_getaffinity(0))} CPUs',
      flush=True,
  )
  for repeat in range(args.repeat):
    for label, tree in trees:
      out = os.path.join(work, label, 'preprocess')
      model = os.path.join(work, label, 'model')
      result = _run_child(tree, 'preprocess', _preprocess_argv(adult_dir, out),
                          work)
      _add_manifest_stages(result, out)
      runs['preprocess'][label].append(result)
      print(
          f'profile: run {repeat + 1} {label} preprocess '
          f'{result["seconds"]["whole command (wall)"]:.1f} s '
          f'(load {_load()})',
          flush=True,
      )
      if 'train' in commands:
        result = _run_child(
            tree,
            'train',
            ['--preprocess-dir', out, '--model-dir', model, '--verbose', '0'],
            work,
        )
        runs['train'][label].append(result)
        print(
            f'profile: run {repeat + 1} {label} train '
            f'{result["seconds"]["whole command (wall)"]:.1f} s '
            f'(load {_load()})',
            flush=True,
        )
  for command in commands:
    print(f'\n{command} (median of {args.repeat} run(s): wall seconds of the '
          'outermost calls; "a: b" is a part of phase a)')
    print(_table(command, runs[command]))
  print(f'\nprofile: load average {load_before} before, {_load()} after')
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump(
          {
              'load_before': load_before,
              'load_after': _load(),
              'trees': dict(trees),
              'runs': runs,
          },
          f,
          indent=1,
      )
  return 0


if __name__ == '__main__':
  sys.exit(main())
