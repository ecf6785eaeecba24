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

from core import cli
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
from serving import flags
from serving.batcher import MicroBatcher
from serving.request_log import RequestLog

log = logging.getLogger('serving')

# Seconds aiohttp keeps reading (and dropping) the rest of a body it did not
# need, e.g. after a 400, so the client can read the answer.
_LINGERING_SECONDS = 2.0


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
  args = flags.server(argv)
  cli.started()
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
