"""python -m trainer.serve: serve the exported model over TF Serving's REST API.

    python -m trainer.serve --model-dir MDIR [--port 8501] [--host 127.0.0.1]
        [--model-name NAME] [--request-log FILE]
        [--request-log-max-bytes N] [--request-log-backups N]
        [--poll-seconds S] [--max-instances N] [--max-body-bytes N]
        [--model-threads N] [--max-batch-rows N] [--shutdown-timeout S]
        [--max-connections N] [--idle-timeout S] [--body-timeout S]

Serves the newest MDIR/export/<version>/ and swaps in a newer version when
one appears, without a restart. Clients send raw feature values; the export's
signatures apply the tf.Transform graph, so nothing about preprocessing is
needed here. With --request-log every served instance is appended as a JSON
line, which `python -m pipeline.skew --serving-data FILE*` checks against the
training statistics. Connections are capped and time out when idle, and a
request that is not HTTP gets a JSON 400, so stalled or hostile clients
cannot take the server down.

The implementation is the `serving` package (see serving/__init__.py); this
module is the stable command. Exit status: 0 after a graceful shutdown
(SIGTERM or SIGINT), 2 for a bad flag, no loadable model or a port that
cannot be bound.
"""

import sys
from typing import Optional, Sequence

from serving import server


def main(argv: Optional[Sequence[str]] = None) -> int:
  return server.main(argv)


if __name__ == '__main__':
  sys.exit(main())
