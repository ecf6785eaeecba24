"""python -m trainer.serve: serve an exported model over TF Serving's REST
and gRPC APIs (the same command as `python -m serving`).

    python -m trainer.serve (--model-dir MDIR | --model-base-path BASE)
        [--port 8501] [--grpc-port 8500] [--request-log FILE] ...

The server lives in the `serving` package, which imports neither Beam nor
Keras (see serving/server.py for every flag and serving/__init__.py for its
modules); this module keeps the command trainer.serve stable. Exit status: 0
after a graceful shutdown (SIGTERM or SIGINT), 2 for a bad flag, no loadable
model or a port that cannot be bound.
"""

import sys
from typing import Optional, Sequence

from core import cli
from serving import flags

if __name__ == '__main__':
  # `--help` and flag mistakes are answered before the server's imports.
  cli.parse_first(flags.server, 'serve', stop_status=0)

from serving import server


def main(argv: Optional[Sequence[str]] = None) -> int:
  return server.main(argv)


if __name__ == '__main__':
  sys.exit(main())
