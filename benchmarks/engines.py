"""The preprocess job on Flink and Spark beside the DirectRunner.

    .venv/bin/python -m benchmarks.engines [--sizes 100k,1M]
        [--engines direct,flink-1,flink-2,spark] [--data-dir /tmp/census-bench]
        [--json FILE]

For each size it generates (once, then reuses) scale-up Adult data as sharded
CSV (benchmarks/generate_census.py, as benchmarks/preprocess.py does) and runs
`python -m pipeline.preprocess --config schemas/census.yaml` on it:

  direct    the DirectRunner in-process (the default)
  flink-1   scripts/submit_flink.sh to a local Flink cluster, parallelism 1
  flink-2   the same with parallelism 2
  spark     scripts/submit_spark.sh to a local Spark cluster

Flink and Spark run as `make flink-up` / `make spark-up` start them (separate
JobManager/TaskManager or master/worker JVMs, Beam's job server, Beam's
EXTERNAL SDK worker pool), one cluster per engine for the whole benchmark, in
a folder of its own and on free ports, stopped by PID at the end. The SDK
workers get the project as the staged setup.py sdist, as on a remote cluster.

Printed per run: wall seconds (from the command's start to its exit: what a
user waits, including interpreter start-up, graph construction, staging the
sdist, the job and publishing), rows/s (input rows / wall) and the
`run_pipeline` seconds of the manifest (submission to the job's end). Nothing
is asserted; timings depend on the machine and what else it runs.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

from benchmarks import generate_census
from scripts.engines import cluster as engines

ROOT = generate_census.ROOT
CONFIG = str(ROOT / 'schemas' / 'census.yaml')
ENGINES = ('direct', 'flink-1', 'flink-2', 'spark')
RUN_TIMEOUT_S = 3600


def _env() -> Dict[str, str]:
  env = dict(os.environ)
  env.pop('PYTHONPATH', None)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  env.setdefault('PYTHONWARNINGS', 'ignore')
  return env


def _command(engine: str, clusters: Dict[str, engines.Cluster],
             input_pattern: str, out: str) -> List[str]:
  data = ['--config', CONFIG, '--input', input_pattern, '--output-dir', out]
  if engine == 'direct':
    return [str(ROOT / 'scripts' / 'run_local.sh'), *data]
  kind = engine.split('-')[0]
  cluster = clusters[kind]
  cmd = [
      str(ROOT / 'scripts' / f'submit_{kind}.sh'), '--job-endpoint',
      cluster.job_endpoint, '--environment-type', 'EXTERNAL',
      '--environment-config', cluster.worker_pool, *data
  ]
  if kind == 'flink':
    cmd += ['--parallelism', engine.split('-')[1]]
  return cmd


def run_once(engine: str, clusters: Dict[str, engines.Cluster],
             input_pattern: str, rows: int, work_dir: str) -> Dict[str, object]:
  out = os.path.join(work_dir, f'out-{rows}-{engine}')
  for path in (out, out + '.tmp'):
    shutil.rmtree(path, ignore_errors=True)
  cmd = _command(engine, clusters, input_pattern, out)
  log_path = os.path.join(work_dir, f'log-{rows}-{engine}.txt')
  print(f'$ {" ".join(cmd)}', file=sys.stderr, flush=True)
  start = time.monotonic()
  with open(log_path, 'w', encoding='utf-8') as log:
    returncode = subprocess.run(
        cmd,
        cwd=work_dir,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        timeout=RUN_TIMEOUT_S,
        check=False).returncode
  wall = time.monotonic() - start
  result = {
      'rows': rows,
      'engine': engine,
      'wall_s': round(wall, 1),
      'rows_per_s': round(rows / wall),
      'returncode': returncode,
      'log': log_path
  }
  if returncode != 0:
    print(f'  failed ({returncode}); see {log_path}', file=sys.stderr)
    return result
  with open(os.path.join(out, 'manifest.json'), encoding='utf-8') as f:
    manifest = json.load(f)
  result['run_pipeline_s'] = round(manifest['seconds']['run_pipeline'], 1)
  result['input_rows'] = manifest['rows']['input']
  shutil.rmtree(out, ignore_errors=True)
  print(
      f'  {wall:.1f}s, {rows / wall:,.0f} rows/s', file=sys.stderr, flush=True)
  return result


def format_table(results: List[Dict[str, object]]) -> str:
  lines = [
      '| rows | engine | wall s | rows/s | run_pipeline s |',
      '|---:|---|---:|---:|---:|'
  ]
  for r in results:
    if r['returncode']:
      lines.append(f'| {r["rows"]:,} | {r["engine"]} | failed '
                   f'({r["returncode"]}) | | |')
      continue
    lines.append(f'| {r["rows"]:,} | {r["engine"]} | {r["wall_s"]:.1f} | '
                 f'{r["rows_per_s"]:,} | {r["run_pipeline_s"]:.1f} |')
  return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      description='Times the preprocess job on the DirectRunner, Flink and '
      'Spark; prints a table.')
  parser.add_argument(
      '--sizes',
      default='100k,1M',
      help='comma-separated row counts (default %(default)s)')
  parser.add_argument(
      '--engines',
      default=','.join(ENGINES),
      help='comma-separated, of: ' + ', '.join(ENGINES))
  parser.add_argument(
      '--data-dir',
      default='/tmp/census-bench',
      help='generated data (shared with benchmarks/'
      'preprocess.py) and outputs (default %(default)s)')
  parser.add_argument(
      '--source',
      default=None,
      help='adult.data to resample (default: found like the '
      'tests find it)')
  parser.add_argument(
      '--json', default=None, help='also write the figures to this JSON file')
  args = parser.parse_args(argv)

  sizes = [generate_census.parse_rows(s) for s in args.sizes.split(',') if s]
  chosen = [e for e in args.engines.split(',') if e]
  unknown = [e for e in chosen if e not in ENGINES]
  if unknown:
    parser.error(f'--engines: unknown {unknown}; choose from {ENGINES}')
  source = args.source or generate_census.find_adult_data()
  if not source:
    parser.error('adult.data not found; pass --source or set ADULT_DATA_DIR')
  work_dir = os.path.join(args.data_dir, 'engines')
  os.makedirs(work_dir, exist_ok=True)
  inputs = {}
  for rows in sizes:
    data = os.path.join(args.data_dir, str(rows))
    generate_census.generate(
        source,
        rows,
        data,
        generate_census.default_shards(rows),
        seed=0,
        bad_rate=1e-4)
    inputs[rows] = os.path.join(data, 'part-*.csv')

  results = []
  state = pathlib.Path(tempfile.mkdtemp(prefix='bench-engines-'))
  # One engine's cluster at a time: the machine's cores go to the job.
  for kind in ('direct', 'flink', 'spark'):
    runs = [e for e in chosen if e.split('-')[0] == kind]
    if not runs:
      continue
    clusters = {}
    try:
      if kind != 'direct':
        print(f'starting a local {kind} cluster', file=sys.stderr, flush=True)
        t = time.monotonic()
        clusters[kind] = engines.Cluster(kind, state / kind).up()
        print(f'  up in {time.monotonic() - t:.1f}s', file=sys.stderr)
      for rows in sizes:
        for engine in runs:
          results.append(
              run_once(engine, clusters, inputs[rows], rows, work_dir))
    except engines.ClusterError as e:
      print(f'{kind}: {e}', file=sys.stderr)
      return 2
    finally:
      for c in clusters.values():
        print(c.down(), file=sys.stderr)
  shutil.rmtree(state, ignore_errors=True)

  results.sort(key=lambda r: (r['rows'], ENGINES.index(r['engine'])))
  print()
  print(f'python -m pipeline.preprocess on scale-up Adult ({os.cpu_count()} '
        'CPUs)')
  print(format_table(results))
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump(results, f, indent=2)
  return 1 if any(r['returncode'] for r in results) else 0


if __name__ == '__main__':
  sys.exit(main())
