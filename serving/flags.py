"""The server's command line, without the server.

Parsing it needs nothing but argparse, while the server imports TensorFlow
and aiohttp (about 5 s on two cores): `python -m trainer.serve` and `python
-m serving` parse their flags with this module first (core.cli.parse_first),
so `--help` and a flag mistake are answered at once. The defaults the flags
show live here.
"""

import argparse
from typing import Optional, Sequence

from core import cli

DEFAULT_PORT = 8501  # TF Serving's REST port
DEFAULT_GRPC_PORT = 8500  # TF Serving's gRPC port
DEFAULT_MAX_BODY_BYTES = 4 * 2**20
DEFAULT_MAX_INSTANCES = 1000
DEFAULT_LOG_MAX_BYTES = 64 * 2**20
DEFAULT_LOG_BACKUPS = 5
DEFAULT_BODY_TIMEOUT = 30.0
# Connections open at once (fewer when the open-file limit is lower), and the
# seconds one may stay open without a complete request head (connections.py).
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_IDLE_TIMEOUT = 15.0


def server(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  """The flags of python -m trainer.serve (python -m serving)."""
  parser = cli.parser(
      'serving', 'Serve the newest exported model version over REST and '
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
      default=DEFAULT_GRPC_PORT,
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
      f'{DEFAULT_MAX_CONNECTIONS}, fewer if the '
      'open-file limit is lower)')
  parser.add_argument(
      '--idle-timeout',
      type=float,
      default=DEFAULT_IDLE_TIMEOUT,
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
