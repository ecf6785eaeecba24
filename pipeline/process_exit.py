"""Ending the launcher process only after Beam's in-process workers have.

With a job server (PortableRunner, Flink, Spark) and `--environment_type
LOOPBACK`, the SDK harness that runs the job's bundles lives in the launcher
process, in daemon threads that Beam starts and never joins (threads named
`run_worker_<id>`). When the job server reports the job done, the harness may
still be shutting down its cached bundle processors; for a tf.Transform or
TFDV stage that means releasing TensorFlow resources, which traces graph
functions and takes seconds on a busy machine. If the interpreter finalizes
meanwhile, it stops such a thread the moment it next takes the GIL, the stop
unwinds through TensorFlow's C++ frames, and the process aborts (SIGABRT,
"FATAL: exception not rethrown") after the job succeeded. Beam's
`wait_until_finish_read` thread reads the job's message stream from gRPC's
native code in the same way.

So a command that ran a Beam job ends through `exit_after_workers`: it waits
for those threads, then ends as every command does (`core.cli.finish`), and
if one is still running after a bound (a hung worker), it flushes everything
and ends the process without its exit handlers either (`core.cli.exit_now`),
with the exit code the job earned.
"""

import logging
import threading
import time
from typing import List, NoReturn, Tuple

from core import cli

# Names Beam 2.61 gives the launcher-side threads of a portable run:
# worker_pool_main.BeamFnExternalWorkerPoolServicer.StartWorker (in-process
# SDK harness) and portable_runner.PipelineResult.wait_until_finish.
MESSAGE_READER = 'wait_until_finish_read'
_WORKER_THREAD_PREFIXES = ('run_worker_', MESSAGE_READER)
DEFAULT_TIMEOUT_S = 120.0


def worker_threads(
    prefixes: Tuple[str,
                    ...] = _WORKER_THREAD_PREFIXES) -> List[threading.Thread]:
  """Beam's in-process worker threads that are still alive."""
  return [
      t for t in threading.enumerate()
      if t.is_alive() and t.name.startswith(prefixes)
  ]


def wait_for_workers(
    timeout_s: float = DEFAULT_TIMEOUT_S,
    prefixes: Tuple[str,
                    ...] = _WORKER_THREAD_PREFIXES) -> List[threading.Thread]:
  """Joins Beam's in-process worker threads (those named with `prefixes`);
  returns those still running."""
  deadline = time.monotonic() + timeout_s
  for thread in worker_threads(prefixes):
    thread.join(max(0.0, deadline - time.monotonic()))
  return worker_threads(prefixes)


def exit_after_workers(code: int,
                       timeout_s: float = DEFAULT_TIMEOUT_S) -> NoReturn:
  """Exits with `code` once no Beam worker thread can abort the process."""
  stuck = wait_for_workers(timeout_s)
  if not stuck:
    cli.finish(code)
  logging.warning(
      'Beam worker threads still running %.0f s after the job ended (%s); '
      'exiting without waiting for them', timeout_s,
      ', '.join(t.name for t in stuck))
  cli.exit_now(code)
