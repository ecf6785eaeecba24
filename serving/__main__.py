"""python -m serving: the REST server (see serving/server.py)."""

import sys

from serving import server

if __name__ == '__main__':
  sys.exit(server.main())
