"""Ctrl-C and SIGTERM stop a job promptly and publish nothing.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread
happens to be. In a Beam job that is often a destructor or a callback inside
TensorFlow or Beam, where the exception is printed as "ignored" and lost, and
the job carries on to publish its output. SIGTERM (what a scheduler sends)
ends the process at once by default, leaving the staging directory behind.

`StopOnSignals` handles both the same way: the first signal raises
`Interrupted` in the main thread and is remembered, so `check()` raises again
before anything is published even if the first raise was swallowed; a
watchdog ends the process if the job has not stopped within a grace period,
and a second signal ends it at once, both after the caller's clean-up.
"""

import contextlib
import signal
import threading
from typing import Any, Callable, Dict, Optional

from pipeline import process_exit

SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEFAULT_GRACE_S = 10.0


class Interrupted(KeyboardInterrupt):
  """The job was asked to stop by a signal."""

  def __init__(self, signum: int):
    self.signum = signum
    self.signal_name = signal.Signals(signum).name
    self.output_dir: Optional[str] = None  # set by the job that stopped
    super().__init__(self.signal_name)

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


class StopOnSignals:
  """Context manager turning SIGINT/SIGTERM into a prompt, clean stop.

  `abandon(signal_name)` is called, from whatever thread ends the process,
  right before the process is ended without unwinding (grace period over or
  a second signal): it must remove partial output and say so in one line.
  """

  def __init__(self,
               abandon: Callable[[str], None],
               grace_s: float = DEFAULT_GRACE_S):
    self._abandon = abandon
    self._grace_s = grace_s
    # signum: the handler signal.signal() returned, restored on exit.
    self._previous: Dict[int, Any] = {}
    self._deferring = False
    self._done = threading.Event()
    self.signum: Optional[int] = None

  def __enter__(self) -> 'StopOnSignals':
    if threading.current_thread() is threading.main_thread():
      for signum in SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    self._done.set()
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def check(self) -> None:
    """Raises Interrupted if a stop was asked for, even if it was lost."""
    if self.signum is not None:
      raise Interrupted(self.signum)

  @contextlib.contextmanager
  def deferred(self):
    """A section a signal must not cut in half (e.g. the final rename)."""
    self._deferring = True
    try:
      yield
    finally:
      self._deferring = False

  def _handle(self, signum, unused_frame) -> None:
    # Python runs signal handlers in the main thread, one at a time.
    first = self.signum is None
    if first:
      self.signum = signum
    else:
      self._end(signum)  # does not return
    threading.Thread(
        target=self._watchdog,
        args=(signum,),
        daemon=True,
        name='stop-on-signal-watchdog').start()
    if not self._deferring:
      raise Interrupted(signum)

  def _watchdog(self, signum: int) -> None:
    if not self._done.wait(self._grace_s):
      self._end(signum)

  def _end(self, signum: int) -> None:
    try:
      self._abandon(signal.Signals(signum).name)
    finally:
      process_exit.exit_now(128 + signum)
