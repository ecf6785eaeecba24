"""Benchmark of serving: in-process signature calls and the REST server.

    .venv/bin/python benchmarks/serving.py --model-dir MDIR
        [--input RAW_CSV] [--duration 30] [--clients 1,8,32]
        [--batching on,off] [--json results.json]

MDIR is a trained model directory (its newest export/<version>/ is used);
`make run` leaves one in out/model. Nothing is trained here. Rows to send come from --input, raw rows in the dataset's own
CSV dialect (e.g. adult.test for the census config; the label column may be
present and is dropped), read with the dataset config inside the export;
without --input, rows are synthesised from that config (numbers in a small
range, strings from a column's allowed values or the empty string), which is
enough for timing since the graph's cost does not depend on the values.

Measured:
  in-process, single row   p50 / p99 of one serving_raw signature call with
                           a 1-row batch (tensors prepared beforehand), and
                           of LoadedModel.predict, the server's own path from
                           a JSON-decoded row to the answer
  in-process, batch        rows/s of serving_raw on batches of --batch-size
  REST                     `python -m trainer.serve` in a child process on
                           127.0.0.1; for each client count, that many
                           concurrent clients (one keep-alive connection each,
                           aiohttp client in this process) send one-row
                           :predict requests back to back for --duration
                           seconds: requests/s, latency p50 / p99, errors
                           (any non-200 or connection error).
                           --batching on,off runs the server as configured and
                           with --max-batch-rows 1 (no micro-batching). The
                           server writes its request log (to a temporary
                           directory) unless --no-request-log.

The clients share the machine with the server, so on a small machine they
take CPU from it: REST figures are what one box serving itself gets, a lower
bound for a server with its own cores. Nothing is asserted; the table says
which targets were met.
"""

import argparse
import asyncio
import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import aiohttp  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

from serving.model_store import (  # pylint: disable=wrong-import-position
    RAW, LoadedModel)
from trainer import export  # pylint: disable=wrong-import-position

TARGET_REST_P99_MS = 25.0   # at 32 concurrent clients
TARGET_SINGLE_P50_MS = 5.0  # in-process single row
TARGET_BATCH_ROWS_S = 20000
_READY = re.compile(r'http://127\.0\.0\.1:(\d+)/v1/models/(\S+)')


# ---------------------------------------------------------------------- rows


def read_rows(path: str, config, limit: int) -> List[Dict[str, Any]]:
  """Raw CSV rows in the dataset's dialect -> instance objects."""
  opts = config.csv
  kinds = {c.name: c.type for c in config.feature_columns}
  names = config.column_names
  without_label = [n for n in names if n != config.label.column]
  missing = set(config.missing_values)
  rows = []
  with open(path, encoding=opts.encoding) as f:
    reader = csv.reader(f, delimiter=opts.delimiter, quotechar=opts.quote_char,
                        skipinitialspace=opts.skip_initial_space)
    header_seen = not opts.header
    for fields in reader:
      if not fields or (opts.comment_prefix and
                        fields[0].strip().startswith(opts.comment_prefix)):
        continue
      if not header_seen:
        header_seen = True
        continue
      layout = {len(names): names, len(without_label): without_label}.get(
          len(fields))
      if layout is None:
        continue
      row = {}
      try:
        for name, value in zip(layout, fields):
          if name not in kinds:
            continue
          value = value.strip()
          if value in missing:
            row[name] = None
          elif kinds[name] == 'int':
            row[name] = int(float(value))
          elif kinds[name] == 'float':
            row[name] = float(value)
          else:
            row[name] = value
      except ValueError:
        continue
      rows.append(row)
      if len(rows) >= limit:
        break
  if not rows:
    raise SystemExit(f'--input {path}: no usable rows')
  return rows


def synthetic_rows(config, n: int, seed: int = 0) -> List[Dict[str, Any]]:
  rng = random.Random(seed)
  rows = []
  for _ in range(n):
    row = {}
    for c in config.feature_columns:
      if c.type == 'int':
        row[c.name] = rng.randint(0, 100)
      elif c.type == 'float':
        row[c.name] = round(rng.uniform(0, 100), 3)
      else:
        values = list(c.allowed_values or ()) or ['']
        row[c.name] = rng.choice(values)
    rows.append(row)
  return rows


# ---------------------------------------------------------------- in-process


def percentiles(samples_s: Sequence[float]) -> Dict[str, float]:
  a = np.asarray(samples_s) * 1000.0
  return {'p50_ms': float(np.percentile(a, 50)),
          'p99_ms': float(np.percentile(a, 99)), 'n': int(a.size)}


def bench_in_process(model: LoadedModel, rows: List[Dict[str, Any]],
                     seconds: float, batch_size: int) -> Dict[str, Any]:
  raw_fn = model._signatures[RAW]  # pylint: disable=protected-access
  plain = [r for r in rows
           if all(r[n] is not None for n, k in model.schema.kinds.items()
                  if k == 'int')] or synthetic_rows(model.config, 100)

  def tensors(batch):
    out = {}
    for name, kind in model.schema.kinds.items():
      col = [r[name] for r in batch]
      if kind == 'int':
        out[name] = tf.constant(col, tf.int64)
      elif kind == 'float':
        out[name] = tf.constant([np.nan if v is None else v for v in col],
                                tf.float32)
      else:
        out[name] = tf.constant(['' if v is None else v for v in col])
    return out

  singles = [tensors([r]) for r in plain[:200]]
  for t in singles[:20]:
    raw_fn(**t)
  samples, end, i = [], time.perf_counter() + seconds, 0
  while time.perf_counter() < end:
    t = singles[i % len(singles)]
    start = time.perf_counter()
    raw_fn(**t)['probabilities'].numpy()
    samples.append(time.perf_counter() - start)
    i += 1
  signature = percentiles(samples)

  samples, end, i = [], time.perf_counter() + seconds, 0
  while time.perf_counter() < end:
    row = rows[i % len(rows)]
    start = time.perf_counter()
    model.predict([row], RAW)
    samples.append(time.perf_counter() - start)
    i += 1
  server_path = percentiles(samples)

  big = [plain[i % len(plain)] for i in range(batch_size)]
  batch = tensors(big)
  raw_fn(**batch)
  scored, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    raw_fn(**batch)['probabilities'].numpy()
    scored += batch_size
  batch_rate = scored / (time.perf_counter() - start)
  return {'single_signature': signature, 'single_predict': server_path,
          'batch_rows_per_s': batch_rate, 'batch_size': batch_size}


# ---------------------------------------------------------------------- REST


class ServerProcess:
  """python -m trainer.serve on a free port, stopped with SIGTERM."""

  def __init__(self, model_dir: str, flags: Sequence[str], log_dir: str):
    self.log_path = os.path.join(log_dir, f'server-{int(time.time()*1e3)}.log')
    self.log = open(self.log_path, 'w', encoding='utf-8')
    self.proc = subprocess.Popen(
        [sys.executable, '-m', 'trainer.serve', '--model-dir', model_dir,
         '--port', '0', '--poll-seconds', '0', *flags],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True,
        env=dict(os.environ, PYTHONWARNINGS='ignore'))
    line = self.proc.stdout.readline()
    match = _READY.search(line)
    if not match:
      self.stop()
      raise SystemExit(f'server did not start; see {self.log_path}')
    self.port, self.name = int(match.group(1)), match.group(2)

  def stop(self) -> int:
    if self.proc.poll() is None:
      self.proc.send_signal(signal.SIGTERM)
      try:
        self.proc.wait(60)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()
    self.log.close()
    return self.proc.returncode


async def _client(session, url, bodies, end, latencies, errors, k):
  i = k
  while time.perf_counter() < end:
    body = bodies[i % len(bodies)]
    i += 7
    start = time.perf_counter()
    try:
      async with session.post(url, data=body,
                              headers={'Content-Type': 'application/json'}
                              ) as resp:
        await resp.read()
        ok = resp.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError):
      ok = False
    latency = time.perf_counter() - start
    if ok:
      latencies.append(latency)
    else:
      errors.append(latency)


async def load(port: int, name: str, bodies: List[bytes], clients: int,
               seconds: float, warmup: float) -> Dict[str, Any]:
  url = f'http://127.0.0.1:{port}/v1/models/{name}:predict'
  connector = aiohttp.TCPConnector(limit=clients, force_close=False)
  timeout = aiohttp.ClientTimeout(total=30)
  async with aiohttp.ClientSession(connector=connector,
                                   timeout=timeout) as session:
    if warmup > 0:
      end = time.perf_counter() + warmup
      await asyncio.gather(*(_client(session, url, bodies, end, [], [], k)
                             for k in range(clients)))
    latencies: List[float] = []
    errors: List[float] = []
    start = time.perf_counter()
    end = start + seconds
    await asyncio.gather(*(_client(session, url, bodies, end, latencies,
                                   errors, k) for k in range(clients)))
    elapsed = time.perf_counter() - start
  result = percentiles(latencies) if latencies else {'p50_ms': float('nan'),
                                                     'p99_ms': float('nan'),
                                                     'n': 0}
  result.update({'clients': clients, 'requests_per_s': len(latencies) /
                 elapsed, 'errors': len(errors), 'seconds': elapsed})
  return result


def bench_rest(model_dir: str, rows: List[Dict[str, Any]], clients: List[int],
               seconds: float, batching: List[str], log_dir: str,
               warmup: float, server_flags: Sequence[str] = (),
               request_log: bool = True) -> List[Dict[str, Any]]:
  bodies = [json.dumps({'instances': [r]}).encode() for r in rows]
  results = []
  for mode in batching:
    flags = list(server_flags) + ([] if mode == 'on'
                                  else ['--max-batch-rows', '1'])
    if request_log:
      flags += ['--request-log',
                os.path.join(log_dir, f'requests-{mode}.jsonl')]
    server = ServerProcess(model_dir, flags, log_dir)
    try:
      for n in clients:
        r = asyncio.run(load(server.port, server.name, bodies, n, seconds,
                             warmup))
        r['batching'] = mode
        results.append(r)
        print(f'  REST batching {mode}, {n} clients: '
              f'{r["requests_per_s"]:,.0f} req/s, p50 {r["p50_ms"]:.2f} ms, '
              f'p99 {r["p99_ms"]:.2f} ms, errors {r["errors"]}',
              file=sys.stderr, flush=True)
    finally:
      code = server.stop()
      if code != 0:
        print(f'  server exited {code}; see {server.log_path}',
              file=sys.stderr)
  return results


# --------------------------------------------------------------------- table


def table(header: Sequence[str], lines: Sequence[Sequence[Any]]) -> str:
  lines = [tuple(str(v) for v in header)] + [tuple(str(v) for v in l)
                                             for l in lines]
  widths = [max(len(l[i]) for l in lines) for i in range(len(header))]
  out = []
  for n, line in enumerate(lines):
    out.append('| ' + ' | '.join(v.ljust(w) if i == 0 else v.rjust(w)
                                 for i, (v, w) in enumerate(zip(line, widths)))
               + ' |')
    if n == 0:
      out.append('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
  return '\n'.join(out)


def report(inproc: Dict[str, Any], rest: List[Dict[str, Any]]) -> str:
  def verdict(ok: bool) -> str:
    return 'met' if ok else 'NOT met'

  s, p = inproc['single_signature'], inproc['single_predict']
  lines = [
      ('in-process single row, signature call', 'p50 / p99 ms',
       f'{s["p50_ms"]:.2f} / {s["p99_ms"]:.2f}',
       f'p50 < {TARGET_SINGLE_P50_MS:g} ms: '
       f'{verdict(s["p50_ms"] < TARGET_SINGLE_P50_MS)}'),
      ('in-process single row, server path (row -> answer)', 'p50 / p99 ms',
       f'{p["p50_ms"]:.2f} / {p["p99_ms"]:.2f}', ''),
      (f'in-process batch scoring (batch {inproc["batch_size"]})', 'rows/s',
       f'{inproc["batch_rows_per_s"]:,.0f}',
       f'>= {TARGET_BATCH_ROWS_S:,}: '
       f'{verdict(inproc["batch_rows_per_s"] >= TARGET_BATCH_ROWS_S)}'),
  ]
  first = table(('measurement', 'unit', 'value', 'target'), lines)
  rest_lines = []
  for r in rest:
    target = ''
    if r['clients'] == 32:
      ok = r['p99_ms'] < TARGET_REST_P99_MS and not r['errors']
      target = f'p99 < {TARGET_REST_P99_MS:g} ms: {verdict(ok)}'
    rest_lines.append((f'REST, batching {r["batching"]}', r['clients'],
                       f'{r["requests_per_s"]:,.0f}', f'{r["p50_ms"]:.2f}',
                       f'{r["p99_ms"]:.2f}', r['errors'], target))
  second = table(('server', 'clients', 'req/s', 'p50 ms', 'p99 ms', 'errors',
                  'target'), rest_lines)
  return first + '\n\n' + second


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model-dir', required=True)
  parser.add_argument('--input', default=None,
                      help='raw CSV rows in the dataset dialect (default: '
                      'synthesised from the config)')
  parser.add_argument('--rows', type=int, default=2000,
                      help='distinct rows to cycle through (default '
                      '%(default)s)')
  parser.add_argument('--duration', type=float, default=30.0,
                      help='seconds per REST measurement (default '
                      '%(default)s)')
  parser.add_argument('--warmup', type=float, default=2.0,
                      help='seconds of traffic before each REST measurement')
  parser.add_argument('--in-process-seconds', type=float, default=10.0)
  parser.add_argument('--clients', default='1,8,32')
  parser.add_argument('--batching', default='on,off',
                      help='server configurations: on (default settings), '
                      'off (--max-batch-rows 1)')
  parser.add_argument('--server-flags', default='',
                      help='extra flags for python -m trainer.serve, e.g. '
                      '"--model-threads 1"')
  parser.add_argument('--no-request-log', action='store_true',
                      help='run the server without --request-log (it logs '
                      'every instance by default, as in production)')
  parser.add_argument('--batch-size', type=int, default=8192)
  parser.add_argument('--skip-rest', action='store_true')
  parser.add_argument('--json', default=None, help='write the figures here')
  return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  export_dir = export.resolve_export_dir(args.model_dir)
  version = int(os.path.basename(export_dir.rstrip('/')))
  model = LoadedModel(export_dir, version)
  rows = (read_rows(args.input, model.config, args.rows) if args.input
          else synthetic_rows(model.config, args.rows))
  print(f'model {export_dir} ({model.config.name}), {len(rows)} rows, '
        f'{os.cpu_count()} CPUs', file=sys.stderr, flush=True)
  inproc = bench_in_process(model, rows, args.in_process_seconds,
                            args.batch_size)
  del model
  rest: List[Dict[str, Any]] = []
  if not args.skip_rest:
    log_dir = tempfile.mkdtemp(prefix='serving-bench-')  # server logs
    rest = bench_rest(args.model_dir, rows,
                      [int(c) for c in args.clients.split(',')],
                      args.duration, args.batching.split(','), log_dir,
                      args.warmup, args.server_flags.split(),
                      not args.no_request_log)
  print(f'\nmodel: {export_dir}; {os.cpu_count()} CPUs; REST: '
        f'{args.duration:g} s per row, one-row requests, request log '
        f'{"off" if args.no_request_log else "on"}, clients and server on the '
        f'same machine; load average at the end: '
        f'{", ".join(f"{x:.1f}" for x in os.getloadavg())}\n')
  print(report(inproc, rest))
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump({'export_dir': export_dir, 'in_process': inproc,
                 'rest': rest, 'args': vars(args)}, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
