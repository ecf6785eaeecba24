"""Start-up, signals and shutdown of the server (python -m trainer.serve).

One process serves TF Serving's REST API (--port, 8501) and its gRPC API
(--grpc-port, 8500; -1 turns it off) from the same model store,
micro-batcher and request log.

Order of events: the newest version is loaded and warmed up before a port
is opened, so the first request never waits for a model; then the server
listens on both ports, prints one line per API with its address on stdout
(the REST line first; with port 0 the system picks a free port and the line
says which), and polls the model base path for newer versions.

On SIGTERM or SIGINT: stop accepting connections and calls (new gRPC calls
get UNAVAILABLE), let the requests and calls in flight finish (up to
--shutdown-timeout seconds), stop the poller, wait for the model threads,
drain and close the request log, exit 0.

Connections are bounded in number and in idle time (connections.py), and a
request body in the time it may take to arrive (--body-timeout), so clients
that connect and stall cannot use up the process's file descriptors.

The event loop is uvloop's where it is installed (a dependency everywhere
but Windows): every request's HTTP/2 or HTTP/1.1 handling runs on the loop,
and uvloop's is cheaper per event than asyncio's (on UCI Adult's model, 32
gRPC callers on 2 cores: about 5% more calls per second; see
benchmarks/serving.py).
"""

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any, NoReturn, Optional, Sequence

from aiohttp import web

from core import quiet

# The modules below import TensorFlow; its start-up noise is filtered
# (core/quiet.py).
with quiet.tensorflow_startup(keras=False):
  from serving import app as app_lib
  from serving import grpc_api
  from serving.model_store import ModelStore

from core.errors import UserError
from core.layout import ModelDir
from core.layout import versions_in
from serving import connections
from serving.batcher import MicroBatcher
from serving.request_log import RequestLog

log = logging.getLogger('serving')

DEFAULT_PORT = 8501  # TF Serving's REST port
DEFAULT_MAX_BODY_BYTES = 4 * 2**20
DEFAULT_MAX_INSTANCES = 1000
DEFAULT_LOG_MAX_BYTES = 64 * 2**20
DEFAULT_LOG_BACKUPS = 5
DEFAULT_BODY_TIMEOUT = 30.0
# Seconds aiohttp keeps reading (and dropping) the rest of a body it did not
# need, e.g. after a 400, so the client can read the answer.
_LINGERING_SECONDS = 2.0


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m serving',
      description='Serve the newest exported model version over REST and '
      'gRPC APIs compatible with TF Serving\'s (predict, classify, regress, '
      'model status and metadata), logging every served instance for the '
      'skew check.')
  where = parser.add_mutually_exclusive_group(required=True)
  where.add_argument(
      '--model-base-path',
      default=None,
      metavar='BASE',
      help='TF Serving model base path: versions are read '
      'from BASE/<version>/ (what trainer.push publishes '
      'into)')
  where.add_argument(
      '--model-dir',
      default=None,
      help='a model directory of trainer.task; versions are '
      'read from MODEL_DIR/export/<version>/')
  parser.add_argument(
      '--port',
      type=int,
      default=DEFAULT_PORT,
      help='TCP port (default %(default)s; 0 picks a free '
      'port, printed at start-up)')
  parser.add_argument(
      '--grpc-port',
      type=int,
      default=grpc_api.DEFAULT_PORT,
      help='TCP port of the gRPC API (default %(default)s, '
      'TF Serving\'s; 0 picks a free port, printed at '
      'start-up; -1 turns gRPC off)')
  parser.add_argument(
      '--host',
      default='127.0.0.1',
      help='address to bind (default %(default)s; 0.0.0.0 '
      'for every interface)')
  parser.add_argument(
      '--model-name',
      default=None,
      help='NAME in /v1/models/NAME (default: the dataset '
      'name in the export\'s config)')
  parser.add_argument(
      '--request-log',
      default=None,
      metavar='FILE',
      help='append each served instance to FILE as a JSON '
      'line (input for python -m pipeline.skew)')
  parser.add_argument(
      '--request-log-max-bytes',
      type=int,
      default=DEFAULT_LOG_MAX_BYTES,
      help='rotate the request log at this size (default '
      '%(default)s; 0: never rotate)')
  parser.add_argument(
      '--request-log-backups',
      type=int,
      default=DEFAULT_LOG_BACKUPS,
      help='rotated files kept: FILE.1 ... FILE.N (default '
      '%(default)s)')
  parser.add_argument(
      '--poll-seconds',
      type=float,
      default=2.0,
      help='how often to look for a new version (default '
      '%(default)s; 0: never)')
  parser.add_argument(
      '--max-instances',
      type=int,
      default=DEFAULT_MAX_INSTANCES,
      help='instances per request (default %(default)s)')
  parser.add_argument(
      '--max-body-bytes',
      type=int,
      default=DEFAULT_MAX_BODY_BYTES,
      help='request size limit: a REST body or a gRPC '
      'message (default %(default)s)')
  parser.add_argument(
      '--model-threads',
      type=int,
      default=1,
      help='signature calls running at once (default %(default)s: '
      'concurrent requests are merged into the one call; on 2 cores a second '
      'call at once took CPU from the event loop and served fewer requests)')
  parser.add_argument(
      '--max-batch-rows',
      type=int,
      default=256,
      help='rows merged into one signature call from '
      'concurrent requests (default %(default)s; 1: no '
      'merging)')
  parser.add_argument(
      '--shutdown-timeout',
      type=float,
      default=30.0,
      help='seconds requests in flight get to finish on '
      'SIGTERM (default %(default)s)')
  parser.add_argument(
      '--max-connections',
      type=int,
      default=None,
      help='connections open at once; at the limit the '
      'longest-idle one is closed to make room, and when '
      'every one is busy a new one gets 503; over gRPC, '
      'calls in progress at once, more get '
      'RESOURCE_EXHAUSTED (default '
      f'{connections.DEFAULT_MAX_CONNECTIONS}, fewer if the '
      'open-file limit is lower)')
  parser.add_argument(
      '--idle-timeout',
      type=float,
      default=connections.DEFAULT_IDLE_TIMEOUT,
      help='seconds a connection may stay open without '
      'sending a complete request head, after connecting or '
      'after its last response (default %(default)s)')
  parser.add_argument(
      '--body-timeout',
      type=float,
      default=DEFAULT_BODY_TIMEOUT,
      help='seconds a request body may take to arrive; '
      'slower ones get 408 (default %(default)s)')
  parser.add_argument(
      '--verbose',
      action='store_true',
      help='log every request (aiohttp access log)')
  args = parser.parse_args(argv)
  for flag in ('max_instances', 'max_body_bytes', 'model_threads',
               'max_batch_rows'):
    if getattr(args, flag) < 1:
      parser.error(f'--{flag.replace("_", "-")} must be at least 1')
  if not 0 <= args.port <= 65535:
    parser.error('--port must be between 0 and 65535')
  if not -1 <= args.grpc_port <= 65535:
    parser.error('--grpc-port must be between 0 and 65535, or -1 (off)')
  if args.grpc_port > 0 and args.grpc_port == args.port:
    parser.error('--grpc-port and --port must differ')
  if args.poll_seconds < 0 or args.shutdown_timeout < 0:
    parser.error('--poll-seconds and --shutdown-timeout must not be negative')
  if not (args.idle_timeout > 0 and args.body_timeout > 0):
    parser.error('--idle-timeout and --body-timeout must be positive')
  if args.max_connections is not None and args.max_connections < 1:
    parser.error('--max-connections must be at least 1')
  if args.request_log_max_bytes < 0:
    parser.error('--request-log-max-bytes must not be negative')
  if args.request_log_max_bytes > 0 and args.request_log_backups < 1:
    parser.error('--request-log-backups must be at least 1 when the log '
                 'rotates (--request-log-max-bytes > 0)')
  return args


async def serve(args: argparse.Namespace, store: ModelStore,
                request_log: Optional[RequestLog]) -> None:
  """Runs until SIGTERM/SIGINT, then shuts down gracefully."""
  loop = asyncio.get_running_loop()
  stop = asyncio.Event()
  for sig in (signal.SIGTERM, signal.SIGINT):
    loop.add_signal_handler(sig, stop.set)
  pressure = connections.PressureLog(args.max_connections)
  connections.install_accept_error_handler(loop, pressure)
  batcher = MicroBatcher(
      workers=args.model_threads, max_batch_rows=args.max_batch_rows)
  current = store.current
  assert current is not None  # load_initial() succeeded
  name = args.model_name or current.config.name
  application = app_lib.make_app(
      store,
      batcher,
      request_log,
      name,
      args.max_body_bytes,
      args.max_instances,
      body_timeout=args.body_timeout)
  runner = web.AppRunner(
      application,
      handle_signals=False,
      shutdown_timeout=args.shutdown_timeout,
      access_log=log if args.verbose else None,
      keepalive_timeout=args.idle_timeout,
      lingering_time=_LINGERING_SECONDS)
  await runner.setup()
  grpc_server: Optional[grpc_api.GrpcServer] = None
  try:
    if args.grpc_port >= 0:
      grpc_server = grpc_api.GrpcServer(
          store,
          batcher,
          request_log,
          name,
          max_message_bytes=args.max_body_bytes,
          max_instances=args.max_instances,
          max_calls=args.max_connections,
          idle_timeout=args.idle_timeout)
      grpc_port = await grpc_server.start(args.host, args.grpc_port)
    site = connections.GuardedSite(
        runner, args.host, args.port,
        connections.ConnectionGuard(runner, args.max_connections, pressure))
    try:
      await site.start()
    except OSError as e:  # the port is taken, the address is not ours
      raise UserError(f'cannot listen on {args.host}:{args.port}: {e}') \
          from None
    port = runner.addresses[0][1]
    host = args.host if ':' not in args.host else f'[{args.host}]'
    lines = [
        f'serving model {name!r} version {current.version} at '
        f'http://{host}:{port}/v1/models/{name}'
    ]
    if grpc_server is not None:
      lines.append(f'serving model {name!r} version {current.version} over '
                   f'gRPC at {host}:{grpc_port}')
    print('\n'.join(lines), flush=True)  # one write: both or neither
    store.start_polling()
    await stop.wait()
    log.warning('shutting down: finishing requests in flight')
  finally:
    # Both stop listening and wait for the requests and calls in flight.
    await asyncio.gather(
        runner.cleanup(),
        *([grpc_server.stop(args.shutdown_timeout)] if grpc_server else []))
    await store.stop()
    batcher.close()
    pressure.flush()


def _event_loop_run() -> Any:
  """uvloop.run where uvloop is installed, else asyncio.run."""
  try:
    import uvloop  # pylint: disable=import-outside-toplevel
  except ImportError:
    return asyncio.run
  return uvloop.run


class _Terminated(BaseException):
  """SIGTERM/SIGINT before the server was listening: nothing to drain."""


def _terminate(signum: int, frame: Any) -> NoReturn:  # pylint: disable=unused-argument
  raise _Terminated()


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  logging.basicConfig(
      level=logging.INFO if args.verbose else logging.WARNING,
      format='%(asctime)s %(levelname)s %(message)s')
  # Until serve() installs the event loop's handlers, a stop request during
  # the (slow) model load still ends the process cleanly with status 0.
  signal.signal(signal.SIGTERM, _terminate)
  signal.signal(signal.SIGINT, _terminate)
  try:
    return _run(args)
  except _Terminated:
    log.warning('stopped before serving')
    return 0


def _run(args: argparse.Namespace) -> int:
  file_limit = connections.raise_file_limit()
  if args.max_connections is None:
    args.max_connections = connections.default_max_connections(file_limit)
  elif args.max_connections + connections.RESERVED_FILES > file_limit:
    print(
        f'serve: error: --max-connections {args.max_connections} needs '
        f'{args.max_connections + connections.RESERVED_FILES} open files '
        f'with the server\'s own, but the limit is {file_limit} (ulimit '
        '-n); lower it or raise the limit',
        file=sys.stderr)
    return 2
  if args.model_dir is not None:
    base_path = ModelDir(args.model_dir).export_base
  else:
    base_path = args.model_base_path
  store = ModelStore(base_path, poll_seconds=args.poll_seconds)
  try:
    if args.model_dir is not None and not versions_in(base_path):
      ModelDir(args.model_dir).latest_export()  # says what to run first
    store.load_initial()
  except UserError as e:
    print(f'serve: error: {e}', file=sys.stderr)
    return 2
  except Exception as e:  # noqa: BLE001 - any load failure: one line, exit 2
    print(
        f'serve: error: cannot load the model in {base_path}: '
        f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}',
        file=sys.stderr)
    return 2
  request_log = None
  if args.request_log:
    try:
      request_log = RequestLog(args.request_log, args.request_log_max_bytes,
                               args.request_log_backups)
    except OSError as e:
      print(
          f'serve: error: --request-log {args.request_log}: {e}',
          file=sys.stderr)
      return 2
  try:
    _event_loop_run()(serve(args, store, request_log))
  except UserError as e:
    print(f'serve: error: {e}', file=sys.stderr)
    return 2
  finally:
    if request_log is not None:
      request_log.close()
  log.warning('stopped')
  return 0
