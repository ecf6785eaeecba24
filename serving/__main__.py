"""python -m serving: the REST server (see serving/server.py)."""

import sys

from core import cli
from serving import flags

if __name__ == '__main__':
  # `--help` and flag mistakes are answered before the server's imports.
  cli.parse_first(flags.server, 'serve', stop_status=0)
  from serving import server  # pylint: disable=g-import-not-at-top

  sys.exit(server.main())
