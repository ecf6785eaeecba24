"""Benchmark of the whole preprocess job on scale-up Adult data.

    .venv/bin/python -m benchmarks.preprocess [--sizes 50k,500k,1M,2M]
        [--modes in_process,multi_processing] [--data-dir /tmp/census-bench]
        [--repeat N] [--json FILE]

For each size N it generates (once, then reuses) N rows of Adult-like data as
sharded CSV (benchmarks/generate_census.py), then runs the real command,
`python -m pipeline.preprocess --config schemas/census.yaml ...`, as a child
process in each mode:

  in_process         the DirectRunner's default in-process (FnApiRunner) mode
  multi_processing   --direct_running_mode multi_processing
                     --direct_num_workers 2

and measures, from outside the job:

  wall        seconds from start to exit (interpreter start-up, graph
              construction, the pipeline, publishing: everything a user waits)
  rows/s      input rows / wall
  peak RSS    the highest sum of resident memory over the job's whole process
              tree (the launcher and every worker it starts), sampled every
              0.2 s from /proc; shared library pages count once per process,
              so for multi_processing this overstates the unique memory used
  peak proc   the highest RSS of any single process of the tree

The job's own seconds come from its manifest: graph construction, the
pipeline run, and per stage (ingest, split, statistics, analyze, transform,
write) the worker seconds Beam's execution-time metrics attribute to it
(summed over workers, so with two workers they can add up to more than the
wall time). The table is printed at the end, then the scaling between
consecutive sizes: time, time per row and peak memory ratios. With --repeat
each size and mode runs several times and the table shows every run; the
scaling uses the fastest run of each. With --json the raw figures are
written too. Nothing is asserted: timings depend on the machine and on
whatever else it runs, so compare ratios from the same invocation. Linux only
(reads /proc).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

from benchmarks import generate_census

ROOT = generate_census.ROOT
CONFIG = str(ROOT / 'schemas' / 'census.yaml')
MODES = {
    'in_process': [],
    'multi_processing': [
        '--direct_running_mode', 'multi_processing', '--direct_num_workers', '2'
    ],
}
_PAGE = os.sysconf('SC_PAGE_SIZE')


def _children() -> Dict[int, List[int]]:
  tree: Dict[int, List[int]] = {}
  for name in os.listdir('/proc'):
    if not name.isdigit():
      continue
    try:
      with open(f'/proc/{name}/stat', 'rb') as f:
        stat = f.read()
    except OSError:
      continue
    # The command name may contain spaces and parentheses: fields start after
    # the last ')'.
    ppid = int(stat[stat.rindex(b')') + 2:].split()[1])
    tree.setdefault(ppid, []).append(int(name))
  return tree


def _rss(pid: int) -> int:
  try:
    with open(f'/proc/{pid}/statm', 'rb') as f:
      return int(f.read().split()[1]) * _PAGE
  except (OSError, IndexError, ValueError):
    return 0


class TreeMemory:
  """Samples the RSS of a process and all its descendants in a thread."""

  def __init__(self, pid: int, interval_s: float = 0.2):
    self._pid = pid
    self._interval = interval_s
    self.peak_total = 0
    self.peak_process = 0
    self.max_processes = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _sample(self) -> None:
    tree = _children()
    pids, todo = [], [self._pid]
    while todo:
      pid = todo.pop()
      pids.append(pid)
      todo.extend(tree.get(pid, ()))
    sizes = [_rss(p) for p in pids]
    self.peak_total = max(self.peak_total, sum(sizes))
    self.peak_process = max(self.peak_process, max(sizes))
    self.max_processes = max(self.max_processes, len(pids))

  def _run(self) -> None:
    while not self._stop.is_set():
      self._sample()
      self._stop.wait(self._interval)

  def stop(self) -> None:
    self._stop.set()
    self._thread.join()


def run_once(input_pattern: str, rows: int, mode: str, work_dir: str,
             keep: bool, profile_dir: Optional[str]) -> Dict[str, object]:
  out = os.path.join(work_dir, f'out-{rows}-{mode}')
  for path in (out, out + '.tmp'):
    shutil.rmtree(path, ignore_errors=True)
  cmd = [
      sys.executable, '-m', 'pipeline.preprocess', '--config', CONFIG,
      '--input', input_pattern, '--output-dir', out, *MODES[mode]
  ]
  if profile_dir:
    # py-spy samples the job and every worker it starts; figures measured this
    # way include the profiler's own overhead and memory.
    os.makedirs(profile_dir, exist_ok=True)
    cmd = [
        'py-spy', 'record', '--subprocesses', '--rate', '50', '--format',
        'speedscope', '-o',
        os.path.join(profile_dir, f'{rows}-{mode}.speedscope.json'), '--', *cmd
    ]
  env = dict(os.environ)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  env.setdefault('PYTHONWARNINGS', 'ignore')
  log_path = os.path.join(work_dir, f'log-{rows}-{mode}.txt')
  print(f'$ {" ".join(cmd)}', file=sys.stderr, flush=True)
  start = time.monotonic()
  with open(log_path, 'w', encoding='utf-8') as log:
    proc = subprocess.Popen(
        cmd, cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT)
    memory = TreeMemory(proc.pid)
    returncode = proc.wait()
    memory.stop()
  wall = time.monotonic() - start
  result = {
      'rows': rows,
      'mode': mode,
      'wall_s': round(wall, 2),
      'rows_per_s': round(rows / wall),
      'returncode': returncode,
      'peak_rss_mb': round(memory.peak_total / 2**20),
      'peak_process_rss_mb': round(memory.peak_process / 2**20),
      'max_processes': memory.max_processes,
      'log': log_path
  }
  if returncode != 0:
    print(f'  failed ({returncode}); see {log_path}', file=sys.stderr)
    return result
  with open(os.path.join(out, 'manifest.json'), encoding='utf-8') as f:
    manifest = json.load(f)
  result['stage_seconds'] = manifest.get('seconds', {})
  result['input_rows'] = manifest['rows']['input']
  if not keep:
    shutil.rmtree(out, ignore_errors=True)
  print(
      f'  {wall:.1f}s, {rows / wall:,.0f} rows/s, peak RSS '
      f'{result["peak_rss_mb"]:,} MB',
      file=sys.stderr,
      flush=True)
  return result


STAGES = ('ingest', 'split', 'statistics', 'analyze', 'transform', 'write')


def format_table(results: List[Dict[str, object]]) -> str:
  header = ('rows', 'mode', 'wall s', 'rows/s', 'peak RSS MB', 'peak proc MB',
            'graph s', 'pipeline s') + tuple(f'{s} s' for s in STAGES)
  lines = [header]
  for r in results:
    seconds = r.get('stage_seconds', {})
    lines.append((f'{r["rows"]:,}', r['mode'], f'{r["wall_s"]:.1f}',
                  f'{r["rows_per_s"]:,}' if not r['returncode'] else 'FAILED',
                  f'{r["peak_rss_mb"]:,}', f'{r["peak_process_rss_mb"]:,}',
                  f'{seconds.get("build_graph", float("nan")):.1f}',
                  f'{seconds.get("run_pipeline", float("nan")):.1f}') +
                 tuple(f'{seconds.get("stage_" + s, float("nan")):.1f}'
                       for s in STAGES))
  widths = [
      max(len(str(line[i])) for line in lines) for i in range(len(header))
  ]
  text = []
  for n, line in enumerate(lines):
    text.append('| ' + ' | '.join(
        str(v).rjust(w) if i != 1 else str(v).ljust(w)
        for i, (v, w) in enumerate(zip(line, widths))) + ' |')
    if n == 0:
      text.append('|' + '|'.join('-' * (w + 1) + (':' if i != 1 else '-')
                                 for i, w in enumerate(widths)) + '|')
  return '\n'.join(text)


def format_scaling(results: List[Dict[str, object]]) -> str:
  """Time and memory growth between consecutive sizes, per mode."""
  lines = []
  for mode in MODES:
    fastest = {}
    for r in results:
      if r['mode'] == mode and not r['returncode'] and (
          r['rows'] not in fastest or
          r['wall_s'] < fastest[r['rows']]['wall_s']):
        fastest[r['rows']] = r
    runs = [fastest[n] for n in sorted(fastest)]
    for a, b in zip(runs, runs[1:]):
      factor = b['rows'] / a['rows']
      time_ratio = b['wall_s'] / a['wall_s']
      pipeline_ratio = (
          b['stage_seconds']['run_pipeline'] /
          a['stage_seconds']['run_pipeline'])
      lines.append(
          f'{mode}: {a["rows"]:,} -> {b["rows"]:,} rows (x{factor:g}): '
          f'time x{time_ratio:.2f} (per row x{time_ratio / factor:.2f}), '
          f'pipeline time x{pipeline_ratio:.2f}, '
          f'peak RSS x{b["peak_rss_mb"] / a["peak_rss_mb"]:.2f}, '
          f'peak process RSS '
          f'x{b["peak_process_rss_mb"] / a["peak_process_rss_mb"]:.2f}')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description='Times `python -m pipeline.preprocess` on scale-up Adult '
      'data; prints a table.')
  parser.add_argument(
      '--sizes',
      default='50k,500k,1M,2M',
      help='comma-separated row counts (default %(default)s)')
  parser.add_argument(
      '--modes',
      default=','.join(MODES),
      help='comma-separated, of: ' + ', '.join(MODES))
  parser.add_argument(
      '--data-dir',
      default='/tmp/census-bench',
      help='where generated data and outputs go '
      '(default %(default)s)')
  parser.add_argument(
      '--source',
      default=None,
      help='adult.data to resample (default: found like the '
      'tests find it)')
  parser.add_argument(
      '--repeat',
      type=int,
      default=1,
      help='runs per size and mode (default %(default)s)')
  parser.add_argument(
      '--keep', action='store_true', help='keep the output directories')
  parser.add_argument(
      '--json', default=None, help='also write the figures to this JSON file')
  parser.add_argument(
      '--profile',
      default=None,
      metavar='DIR',
      help='run under `py-spy record --subprocesses` and '
      'write speedscope profiles to DIR (py-spy must be on '
      'PATH; skews the figures)')
  args = parser.parse_args(argv)

  sizes = [generate_census.parse_rows(s) for s in args.sizes.split(',') if s]
  modes = [m for m in args.modes.split(',') if m]
  unknown = [m for m in modes if m not in MODES]
  if unknown:
    parser.error(f'--modes: unknown {unknown}; choose from {list(MODES)}')
  source = args.source or generate_census.find_adult_data()
  if not source:
    parser.error('adult.data not found; pass --source or set ADULT_DATA_DIR')
  if args.profile and not shutil.which('py-spy'):
    parser.error('--profile needs py-spy on PATH (pip install py-spy)')
  work_dir = os.path.join(args.data_dir, 'runs')
  os.makedirs(work_dir, exist_ok=True)

  results = []
  for rows in sizes:
    data = os.path.join(args.data_dir, str(rows))
    t = time.monotonic()
    generate_census.generate(
        source,
        rows,
        data,
        generate_census.default_shards(rows),
        seed=0,
        bad_rate=1e-4)
    print(
        f'data: {rows:,} rows under {data} ({time.monotonic() - t:.1f}s)',
        file=sys.stderr,
        flush=True)
    for mode in modes:
      for _ in range(args.repeat):
        results.append(
            run_once(
                os.path.join(data, 'part-*.csv'), rows, mode, work_dir,
                args.keep, args.profile))

  print()
  print(f'python -m pipeline.preprocess on scale-up Adult '
        f'({os.cpu_count()} CPUs)')
  print(format_table(results))
  scaling = format_scaling(results)
  if scaling:
    print()
    print(scaling)
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump(results, f, indent=2)
  return 1 if any(r['returncode'] for r in results) else 0


if __name__ == '__main__':
  sys.exit(main())
