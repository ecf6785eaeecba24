"""Benchmark of serving: in-process signature calls, the REST and gRPC APIs.

    .venv/bin/python -m benchmarks.serving --model-dir MDIR
        [--input RAW_CSV] [--duration 30] [--clients 1,8,32]
        [--batching on,off] [--load-generator native|python]
        [--json results.json]

MDIR is a trained model directory (its newest export/<version>/ is used);
`make run` leaves one in out/model. Nothing is trained here. Rows to send
come from --input, raw rows in the dataset's own CSV dialect (e.g. adult.test
for the census config; the label column may be present and is dropped),
read with the dataset config inside the export; without --input, rows are
synthesised from that config (numbers in a small range, strings from a
column's allowed values or the empty string), which is enough for timing
since the graph's cost does not depend on the values. Rows with a missing
int are skipped: serving_raw tensors have no encoding for one.

Measured:
  in-process, single row   p50 / p99 of one serving_raw signature call with
                           a 1-row batch (tensors prepared beforehand), and
                           of LoadedModel.predict, the server's own path from
                           a checked row to the answer
  in-process, batch        rows/s of serving_raw on batches of --batch-size
  server                   `python -m trainer.serve` in a child process on
                           127.0.0.1, REST and gRPC on free ports, request
                           log on (to a temporary directory) unless
                           --no-request-log; one server per --batching mode:
                           on (the default settings) and off
                           (--max-batch-rows 1, one signature call per
                           request). For each:
    single call            one caller in this process sending one-row calls
                           back to back for --single-seconds: REST :predict
                           with http.client on one keep-alive connection,
                           gRPC Predict (serving_raw tensors) with
                           tensorflow-serving-api's PredictionServiceStub;
                           p50 / p99, what one client process sees.
    N concurrent callers   for each --clients count, N callers sending one-
                           row calls back to back for --duration seconds
                           (after --warmup seconds not counted): req/s,
                           p50 / p99, errors. With --load-generator native
                           (the default) the load comes from C programs that
                           take little of the server's CPU: REST from wrk
                           (Debian package wrk; -t1 -cN, one keep-alive
                           connection per caller, rows cycled, latency
                           percentiles from wrk's histogram), gRPC from
                           h2load (Debian package nghttp2-client; -cN -m1,
                           one HTTP/2 connection per caller with one call at
                           a time, the first row as a framed PredictRequest,
                           percentiles from its per-request log). h2load
                           sees HTTP statuses only, so a gRPC call that
                           failed is found by the request log, which has a
                           line per answered row: errors = calls h2load saw
                           succeed minus lines written (n/a without the
                           log). With --load-generator python the callers
                           are coroutines in this process (aiohttp for REST,
                           grpc.aio for gRPC), which compete with the server
                           for the CPU of a small machine.

Nothing is asserted; the tables say which targets were met. On a machine
shared with other work the figures are pessimistic: the load average at the
start and end of the run is printed with them.
"""

import argparse
import asyncio
import csv
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import aiohttp
import grpc
import numpy as np

from core import quiet

# TensorFlow is imported with its start-up noise filtered (core/quiet.py).
with quiet.tensorflow_startup():
  import tensorflow as tf
  from tensorflow_serving.apis import predict_pb2
  from tensorflow_serving.apis import prediction_service_pb2_grpc

from core.layout import resolve_export
from serving.model_store import LoadedModel
from serving.model_store import RAW

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_P99_MS = 25.0  # REST and gRPC, at 32 concurrent callers
TARGET_SINGLE_P50_MS = 5.0  # in-process single row
TARGET_BATCH_ROWS_S = 20000
_READY = re.compile(r'http://127\.0\.0\.1:(\d+)/v1/models/(\S+)')
_GRPC_READY = re.compile(r'over gRPC at 127\.0\.0\.1:(\d+)')
_PREDICT_PATH = '/tensorflow.serving.PredictionService/Predict'

# wrk: cycles through the request bodies (one per line of the file given
# after `--`), then prints its own latency percentiles as one JSON line.
_WRK_SCRIPT = r'''
local requests, n, i = {}, 0, 0
function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    requests[n] = wrk.format("POST", args[2],
                             {["Content-Type"] = "application/json"}, line)
  end
end
function request()
  i = i % n + 1
  return requests[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
      '{"p50_us": %d, "p99_us": %d, "requests": %d, "duration_us": %d, ' ..
      '"status_errors": %d, "socket_errors": %d}\n',
      latency:percentile(50), latency:percentile(99), summary.requests,
      summary.duration, e.status, e.connect + e.read + e.write + e.timeout))
end
'''

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
    reader = csv.reader(
        f,
        delimiter=opts.delimiter,
        quotechar=opts.quote_char,
        skipinitialspace=opts.skip_initial_space)
    header_seen = not opts.header
    for fields in reader:
      if not fields or (opts.comment_prefix and
                        fields[0].strip().startswith(opts.comment_prefix)):
        continue
      if not header_seen:
        header_seen = True
        continue
      layout = {
          len(names): names,
          len(without_label): without_label
      }.get(len(fields))
      if layout is None:
        continue
      row = {}
      try:
        for name, value in zip(layout, fields):
          if name not in kinds:
            continue
          value = value.strip()  # noqa: PLW2901 - the same field, trimmed
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


def predict_request(model: LoadedModel, name: str,
                    row: Dict[str, Any]) -> predict_pb2.PredictRequest:
  """A one-row gRPC Predict on serving_raw, as a TF Serving client builds
  it: one tensor per raw feature; NaN / '' for a missing float / string."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = name
  request.model_spec.signature_name = RAW
  for feature, kind in model.schema.kinds.items():
    value = row[feature]
    if kind == 'int':
      proto = tf.make_tensor_proto(np.array([value], np.int64))
    elif kind == 'float':
      proto = tf.make_tensor_proto(
          np.array([math.nan if value is None else value], np.float32))
    else:
      proto = tf.make_tensor_proto(['' if value is None else value])
    request.inputs[feature].CopyFrom(proto)
  return request


# ---------------------------------------------------------------- in-process


def percentiles(samples_s: Sequence[float]) -> Dict[str, float]:
  if not len(samples_s):  # pylint: disable=g-explicit-length-test
    return {'p50_ms': float('nan'), 'p99_ms': float('nan'), 'n': 0}
  a = np.asarray(samples_s) * 1000.0
  return {
      'p50_ms': float(np.percentile(a, 50)),
      'p99_ms': float(np.percentile(a, 99)),
      'n': int(a.size)
  }


def bench_in_process(model: LoadedModel, rows: List[Dict[str, Any]],
                     seconds: float, batch_size: int) -> Dict[str, Any]:
  raw_fn = model._signatures[RAW]  # pylint: disable=protected-access

  singles = [model.raw_inputs([r]) for r in rows[:200]]
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

  big = [rows[i % len(rows)] for i in range(batch_size)]
  batch = model.raw_inputs(big)
  raw_fn(**batch)
  scored, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    raw_fn(**batch)['probabilities'].numpy()
    scored += batch_size
  batch_rate = scored / (time.perf_counter() - start)
  return {
      'single_signature': signature,
      'single_predict': server_path,
      'batch_rows_per_s': batch_rate,
      'batch_size': batch_size
  }


# -------------------------------------------------------------------- server


class ServerProcess:
  """python -m trainer.serve on free REST and gRPC ports, stopped with
  SIGTERM (by its PID)."""

  def __init__(self, model_dir: str, flags: Sequence[str], log_dir: str):
    self.log_path = os.path.join(log_dir, f'server-{int(time.time()*1e3)}.log')
    self.log = open(self.log_path, 'w', encoding='utf-8')
    self.proc = subprocess.Popen([
        sys.executable, '-m', 'trainer.serve', '--model-dir', model_dir,
        '--port', '0', '--grpc-port', '0', '--poll-seconds', '0', *flags
    ],
                                 cwd=ROOT,
                                 stdout=subprocess.PIPE,
                                 stderr=self.log,
                                 text=True,
                                 env=dict(os.environ, PYTHONWARNINGS='ignore'))
    printed = self.proc.stdout.readline() + self.proc.stdout.readline()
    match, grpc_match = _READY.search(printed), _GRPC_READY.search(printed)
    if not (match and grpc_match):
      self.stop()
      raise SystemExit(f'server did not start; see {self.log_path}')
    self.port, self.name = int(match.group(1)), match.group(2)
    self.grpc_port = int(grpc_match.group(1))

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


def _count_lines(path: Optional[str]) -> Optional[int]:
  """Lines in the request log once its writer thread has caught up."""
  if path is None:
    return None
  count = -1
  while True:
    time.sleep(0.3)
    now = 0
    if os.path.exists(path):
      with open(path, 'rb') as f:
        now = sum(1 for _ in f)
    if now == count:
      return now
    count = now


def single_calls(seconds: float, call: Callable[[int], bool]) -> Dict[str, Any]:
  """One caller, calls back to back: p50 / p99 and errors."""
  for i in range(20):
    call(i)
  latencies, errors, i = [], 0, 0
  start = time.perf_counter()
  end = start + seconds
  while time.perf_counter() < end:
    t = time.perf_counter()
    ok = call(i)
    if ok:
      latencies.append(time.perf_counter() - t)
    else:
      errors += 1
    i += 1
  result = percentiles(latencies)
  result.update({
      'clients': 1,
      'errors': errors,
      'requests_per_s': len(latencies) / (time.perf_counter() - start)
  })
  return result


def rest_single(server: ServerProcess, bodies: List[bytes],
                seconds: float) -> Dict[str, Any]:
  conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=30)
  path = f'/v1/models/{server.name}:predict'

  def call(i):
    conn.request(
        'POST',
        path,
        body=bodies[i % len(bodies)],
        headers={'Content-Type': 'application/json'})
    resp = conn.getresponse()
    resp.read()
    return resp.status == 200

  try:
    return single_calls(seconds, call)
  finally:
    conn.close()


def grpc_single(server: ServerProcess,
                requests: List[predict_pb2.PredictRequest],
                seconds: float) -> Dict[str, Any]:
  channel = grpc.insecure_channel(f'127.0.0.1:{server.grpc_port}')
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

  def call(i):
    try:
      stub.Predict(requests[i % len(requests)], timeout=30)
      return True
    except grpc.RpcError:
      return False

  try:
    return single_calls(seconds, call)
  finally:
    channel.close()


# ----------------------------------------------- native load: wrk and h2load


def _run(cmd: List[str], timeout: float) -> str:
  proc = subprocess.run(
      cmd, capture_output=True, text=True, timeout=timeout, check=False)
  if proc.returncode != 0:
    raise SystemExit(f'{cmd[0]} failed ({proc.returncode}): '
                     f'{(proc.stderr or proc.stdout)[-2000:]}')
  return proc.stdout


def wrk_load(server: ServerProcess, bodies_path: str, script_path: str,
             clients: int, seconds: float, warmup: float) -> Dict[str, Any]:
  url = f'http://127.0.0.1:{server.port}'
  path = f'/v1/models/{server.name}:predict'

  def run(duration):
    out = _run([
        'wrk', '-t1', f'-c{clients}', f'-d{duration:g}s', '--timeout', '30s',
        '-s', script_path, url, '--', bodies_path, path
    ], duration + 120)
    return json.loads(out.strip().splitlines()[-1])

  if warmup > 0:
    run(warmup)
  doc = run(seconds)
  elapsed = doc['duration_us'] / 1e6
  errors = doc['status_errors'] + doc['socket_errors']
  return {
      'clients': clients,
      'p50_ms': doc['p50_us'] / 1000.0,
      'p99_ms': doc['p99_us'] / 1000.0,
      'n': doc['requests'],
      'requests_per_s': (doc['requests'] - errors) / elapsed,
      'errors': errors,
      'seconds': elapsed
  }


def h2load_load(server: ServerProcess, body_path: str, clients: int,
                seconds: float, warmup: float, work_dir: str,
                request_log: Optional[str]) -> Dict[str, Any]:
  url = f'http://127.0.0.1:{server.grpc_port}{_PREDICT_PATH}'
  log_path = os.path.join(work_dir, f'h2load-{clients}.tsv')

  def run(duration, log=None):
    cmd = [
        'h2load', f'-c{clients}', '-m1', '-t1', f'-D{duration:g}', '-d',
        body_path, '-H', 'content-type: application/grpc', '-H', 'te: trailers'
    ]
    if log:
      cmd.append(f'--log-file={log}')
    return _run(cmd + [url], duration + 120)

  if warmup > 0:
    run(warmup)
  before = _count_lines(request_log)
  out = run(seconds, log_path)
  logged = _count_lines(request_log)
  match = re.search(
      r'requests: (\d+) total, (\d+) started, (\d+) done, '
      r'(\d+) succeeded, (\d+) failed, (\d+) errored, '
      r'(\d+) timeout', out)
  if not match:
    raise SystemExit(f'h2load: unexpected output:\n{out[-2000:]}')
  done, succeeded = int(match.group(3)), int(match.group(4))
  failed = done - succeeded
  latencies = []
  with open(log_path, encoding='utf-8') as f:
    for line in f:
      fields = line.split('\t')
      if len(fields) >= 3 and fields[1] == '200':
        latencies.append(int(fields[2]) / 1e6)
  result = percentiles(latencies)
  # A failed gRPC call is an HTTP 200 too; the request log tells.
  unlogged = (
      max(0, succeeded -
          (logged - before)) if request_log is not None else None)
  result.update({
      'clients': clients,
      'requests_per_s': succeeded / seconds,
      'errors': failed + (unlogged or 0),
      'errors_checked': request_log is not None,
      'seconds': seconds
  })
  return result


# --------------------------------------------- python load: aiohttp, grpc.aio


async def _python_load(clients: int, seconds: float, warmup: float,
                       make_call: Callable[[], Any]) -> Dict[str, Any]:
  """`clients` coroutines calling back to back; make_call() gives an async
  call(i) -> ok and its cleanup."""
  call, cleanup = await make_call()

  async def caller(k, end, latencies, errors):
    i = k
    while time.perf_counter() < end:
      start = time.perf_counter()
      ok = await call(i)
      (latencies if ok else errors).append(time.perf_counter() - start)
      i += 7

  try:
    if warmup > 0:
      end = time.perf_counter() + warmup
      await asyncio.gather(*(caller(k, end, [], []) for k in range(clients)))
    latencies: List[float] = []
    errors: List[float] = []
    start = time.perf_counter()
    end = start + seconds
    await asyncio.gather(
        *(caller(k, end, latencies, errors) for k in range(clients)))
    elapsed = time.perf_counter() - start
  finally:
    await cleanup()
  result = percentiles(latencies)
  result.update({
      'clients': clients,
      'requests_per_s': len(latencies) / elapsed,
      'errors': len(errors),
      'seconds': elapsed
  })
  return result


def rest_python_load(server: ServerProcess, bodies: List[bytes], clients: int,
                     seconds: float, warmup: float) -> Dict[str, Any]:
  url = f'http://127.0.0.1:{server.port}/v1/models/{server.name}:predict'

  async def make_call():
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=clients),
        timeout=aiohttp.ClientTimeout(total=30))

    async def call(i):
      try:
        async with session.post(
            url,
            data=bodies[i % len(bodies)],
            headers={'Content-Type': 'application/json'}) as resp:
          await resp.read()
          return resp.status == 200
      except (aiohttp.ClientError, asyncio.TimeoutError):
        return False

    return call, session.close

  return asyncio.run(_python_load(clients, seconds, warmup, make_call))


def grpc_python_load(server: ServerProcess,
                     requests: List[predict_pb2.PredictRequest], clients: int,
                     seconds: float, warmup: float) -> Dict[str, Any]:

  async def make_call():
    channel = grpc.aio.insecure_channel(f'127.0.0.1:{server.grpc_port}')
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    async def call(i):
      try:
        await stub.Predict(requests[i % len(requests)], timeout=30)
        return True
      except grpc.RpcError:
        return False

    return call, channel.close

  return asyncio.run(_python_load(clients, seconds, warmup, make_call))


# ------------------------------------------------------------------- runs


def bench_servers(args: argparse.Namespace, model: LoadedModel,
                  rows: List[Dict[str,
                                  Any]], work_dir: str) -> List[Dict[str, Any]]:
  clients = [int(c) for c in args.clients.split(',')]
  bodies = [json.dumps({'instances': [r]}).encode() for r in rows]
  bodies_path = os.path.join(work_dir, 'bodies.jsonl')
  with open(bodies_path, 'wb') as f:
    f.write(b'\n'.join(bodies) + b'\n')
  script_path = os.path.join(work_dir, 'predict.lua')
  with open(script_path, 'w', encoding='utf-8') as f:
    f.write(_WRK_SCRIPT)
  results = []
  for mode in args.batching.split(','):
    flags = args.server_flags.split() + ([] if mode == 'on' else
                                         ['--max-batch-rows', '1'])
    request_log = None
    if not args.no_request_log:
      request_log = os.path.join(work_dir, f'requests-{mode}.jsonl')
      flags += ['--request-log', request_log, '--request-log-max-bytes', '0']
    server = ServerProcess(args.model_dir, flags, work_dir)
    requests = [predict_request(model, server.name, r) for r in rows]
    framed = requests[0].SerializeToString()
    body_path = os.path.join(work_dir, 'predict.grpc')
    with open(body_path, 'wb') as f:  # gRPC's framing: flag, length, message
      f.write(b'\0' + struct.pack('>I', len(framed)) + framed)

    def record(api, client, r, mode=mode):
      r.update({'api': api, 'client': client, 'batching': mode})
      results.append(r)
      print(
          f'  {api} batching {mode}, {client}, {r["clients"]} callers: '
          f'{r["requests_per_s"]:,.0f} req/s, p50 {r["p50_ms"]:.2f} ms, '
          f'p99 {r["p99_ms"]:.2f} ms, errors {r["errors"]}',
          file=sys.stderr,
          flush=True)

    try:
      record('REST', 'Python http.client',
             rest_single(server, bodies, args.single_seconds))
      record('gRPC', 'Python stub',
             grpc_single(server, requests, args.single_seconds))
      for n in clients:
        if args.load_generator == 'native':
          record(
              'REST', 'wrk',
              wrk_load(server, bodies_path, script_path, n, args.duration,
                       args.warmup))
          record(
              'gRPC', 'h2load',
              h2load_load(server, body_path, n, args.duration, args.warmup,
                          work_dir, request_log))
        else:
          record(
              'REST', 'Python aiohttp',
              rest_python_load(server, bodies, n, args.duration, args.warmup))
          record(
              'gRPC', 'Python grpc.aio',
              grpc_python_load(server, requests, n, args.duration, args.warmup))
    finally:
      code = server.stop()
      if code != 0:
        print(f'  server exited {code}; see {server.log_path}', file=sys.stderr)
  return results


# --------------------------------------------------------------------- table


def table(header: Sequence[str], lines: Sequence[Sequence[Any]]) -> str:
  lines = [tuple(str(v) for v in header)
          ] + [tuple(str(v) for v in l) for l in lines]
  widths = [max(len(l[i]) for l in lines) for i in range(len(header))]
  out = []
  for n, line in enumerate(lines):
    out.append('| ' + ' | '.join(
        v.ljust(w) if i == 0 else v.rjust(w)
        for i, (v, w) in enumerate(zip(line, widths))) + ' |')
    if n == 0:
      out.append('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
  return '\n'.join(out)


def report(inproc: Dict[str, Any], served: List[Dict[str, Any]]) -> str:

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
       f'{inproc["batch_rows_per_s"]:,.0f}', f'>= {TARGET_BATCH_ROWS_S:,}: '
       f'{verdict(inproc["batch_rows_per_s"] >= TARGET_BATCH_ROWS_S)}'),
  ]
  first = table(('measurement', 'unit', 'value', 'target'), lines)
  server_lines = []
  for r in served:
    target = ''
    # The target is the server's as it runs by default; batching off is a
    # comparison.
    if r['clients'] == 32 and r['batching'] == 'on':
      ok = r['p99_ms'] < TARGET_P99_MS and not r['errors']
      target = f'p99 < {TARGET_P99_MS:g} ms: {verdict(ok)}'
    errors = (
        str(r['errors'])
        if r.get('errors_checked', True) else f'{r["errors"]} (HTTP only)')
    server_lines.append((r['api'], r['client'], r['batching'], r['clients'],
                         f'{r["requests_per_s"]:,.0f}', f'{r["p50_ms"]:.2f}',
                         f'{r["p99_ms"]:.2f}', errors, target))
  second = table(('API', 'client', 'batching', 'callers', 'req/s', 'p50 ms',
                  'p99 ms', 'errors', 'target'), server_lines)
  return first + '\n\n' + second


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model-dir', required=True)
  parser.add_argument(
      '--input',
      default=None,
      help='raw CSV rows in the dataset dialect (default: '
      'synthesised from the config)')
  parser.add_argument(
      '--rows',
      type=int,
      default=2000,
      help='distinct rows to cycle through (default '
      '%(default)s)')
  parser.add_argument(
      '--duration',
      type=float,
      default=30.0,
      help='seconds per concurrent-callers measurement '
      '(default %(default)s)')
  parser.add_argument(
      '--warmup',
      type=float,
      default=2.0,
      help='seconds of traffic before each of them, not '
      'counted (default %(default)s)')
  parser.add_argument(
      '--single-seconds',
      type=float,
      default=10.0,
      help='seconds per single-caller measurement (default '
      '%(default)s)')
  parser.add_argument('--in-process-seconds', type=float, default=10.0)
  parser.add_argument(
      '--clients',
      default='1,8,32',
      help='concurrent callers, comma-separated (default '
      '%(default)s)')
  parser.add_argument(
      '--batching',
      default='on,off',
      help='server configurations: on (default settings), '
      'off (--max-batch-rows 1)')
  parser.add_argument(
      '--load-generator',
      choices=('native', 'python'),
      default='native',
      help='native: wrk (REST) and h2load (gRPC), C programs '
      'installed from Debian (make bench-serving installs '
      'them); python: coroutines in this process (default '
      '%(default)s)')
  parser.add_argument(
      '--server-flags',
      default='',
      help='extra flags for python -m trainer.serve, e.g. '
      '"--model-threads 2"')
  parser.add_argument(
      '--no-request-log',
      action='store_true',
      help='run the server without --request-log (it logs '
      'every instance by default, as in production)')
  parser.add_argument('--batch-size', type=int, default=8192)
  parser.add_argument(
      '--skip-server', action='store_true', help='in-process figures only')
  parser.add_argument('--json', default=None, help='write the figures here')
  return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  if not args.skip_server and args.load_generator == 'native':
    missing = [t for t in ('wrk', 'h2load') if shutil.which(t) is None]
    if missing:
      raise SystemExit(
          f'{", ".join(missing)} not found: install the Debian packages wrk '
          'and nghttp2-client (apt-get install wrk nghttp2-client; make '
          'bench-serving does), or use --load-generator python')
  load_start = os.getloadavg()
  export_dir = resolve_export(args.model_dir).path
  version = int(os.path.basename(export_dir.rstrip('/')))
  model = LoadedModel(export_dir, version)
  rows = (
      read_rows(args.input, model.config, args.rows)
      if args.input else synthetic_rows(model.config, args.rows))
  ints = [n for n, k in model.schema.kinds.items() if k == 'int']
  rows = [r for r in rows if all(r[n] is not None for n in ints)]
  if not rows:
    raise SystemExit('no row without a missing int to send')
  print(
      f'model {export_dir} ({model.config.name}), {len(rows)} rows, '
      f'{os.cpu_count()} CPUs',
      file=sys.stderr,
      flush=True)
  inproc = bench_in_process(model, rows, args.in_process_seconds,
                            args.batch_size)
  served: List[Dict[str, Any]] = []
  if not args.skip_server:
    work_dir = tempfile.mkdtemp(prefix='serving-bench-')  # logs, bodies
    served = bench_servers(args, model, rows, work_dir)
  load_end = os.getloadavg()
  print(f'\nmodel: {export_dir}; {os.cpu_count()} CPUs; one-row calls, '
        f'{args.duration:g} s per concurrent measurement, '
        f'{args.single_seconds:g} s per single-caller one; request log '
        f'{"off" if args.no_request_log else "on"}; load generator '
        f'{args.load_generator}, on the same machine as the server; load '
        f'average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the '
        'end\n')
  print(report(inproc, served))
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump(
          {
              'export_dir': export_dir,
              'in_process': inproc,
              'served': served,
              'load_average': [load_start, load_end],
              'args': vars(args)
          },
          f,
          indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
