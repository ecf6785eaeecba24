"""Ctrl-C and SIGTERM stop a command promptly and publish nothing.

Every command's body runs under `StopOnSignals` (core/cli.py's `run`; the
preprocess sets up its own around its Beam job). Python turns SIGINT into a
KeyboardInterrupt raised wherever the main thread happens to be. In a Beam
job that is often a destructor or a callback inside TensorFlow or Beam,
where the exception is printed as "ignored" and lost, and the job carries on
to publish its output. SIGTERM (what a scheduler sends) ends the process at
once by default, leaving the staging directory behind. A signal the process
was started with ignored (SIGINT under `nohup cmd &`) stays ignored.

`StopOnSignals` handles both the same way: the first signal raises
`Interrupted` in the main thread and is remembered, so `check()` raises again
before anything is published even if the first raise was swallowed. Inside
an `insistent()` section (the job's run), a swallowed raise is repeated
until one unwinds the section, instead of the job running on to its end. A
watchdog ends the process if the job has not stopped within a grace period,
and a second signal ends it at once, both after the caller's clean-up,
which neither the repeat nor a further signal cuts short.

The watchdog's clean-up runs while the main thread may still be running the
job and writing files, which would bring back a directory the clean-up just
removed: it first parks the main thread (a raise it cannot swallow is not
possible, but a signal handler that never returns is), then cleans up.

The stop is reported in one line by the caller, so while the signals are
handled the `Interrupted` is not reported again on its way out: Beam logs
every exception a DoFn raises with its traceback (dozens of TensorFlow
frames when the signal lands in a tf.Transform trace), and Python prints
"Exception ignored in ..." with a traceback for each raise a destructor
swallowed. Records and unraisable exceptions carrying an `Interrupted`, or
an exception it caused, are dropped; any other exception is printed as
before. Once a stop has been asked for, so is the SystemError with which
Python reports an exception that C code left pending without noticing it
(TensorFlow's type checks report it as unraisable): the signal handler's
raise is what lands in the middle of such C code, and the exception the
report names as pending does not always carry the stop (one printed after
a stop of the preprocess had no `Interrupted` among its causes).
"""

import contextlib
import logging
import signal
import sys
import threading
import time
import types
from typing import Any, Callable, Dict, Iterator, List, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install(
    handler: Callable[[int, Optional[types.FrameType]],
                      None]) -> Dict[int, Any]:
  """Sets `handler` for SIGINT and SIGTERM; returns the handlers it
  replaced, by signal. A signal the process was started with ignored
  (SIGINT under `nohup cmd &`) stays ignored."""
  return {
      signum: signal.signal(signum, handler)
      for signum in SIGNALS
      if signal.getsignal(signum) != signal.SIG_IGN
  }


DEFAULT_GRACE_S = 10.0
# How often a swallowed Interrupted is raised again in an insistent section.
REPEAT_S = 0.5
# How long the watchdog waits for the main thread to park (it runs no Python
# while inside a long C call) before it cleans up anyway.
PARK_WAIT_S = 2.0


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


# pybind11 (TensorFlow's bindings) builds a Python exception from a C++
# error by calling the exception's class. When the signal lands in that call,
# pybind11 raises a RuntimeError "MISMATCH of original and normalized active
# exception types: ORIGINAL InvalidArgumentError REPLACED BY Interrupted:
# SIGTERM" that names the stop but does not chain it.
_PYBIND11_REPLACED_BY_STOP = f'REPLACED BY {Interrupted.__name__}: '


def caused_by_stop(exc: Optional[BaseException]) -> bool:
  """Whether `exc` is an `Interrupted` or was raised because of one (e.g. a
  C extension's SystemError "returned a result with an exception set",
  pybind11's RuntimeError when the stop replaced the error it was raising,
  or Beam's RuntimeError re-raising it with a step's name).
  """
  seen = set()
  while exc is not None and id(exc) not in seen:
    if isinstance(exc, Interrupted) or (isinstance(exc, RuntimeError) and
                                        _PYBIND11_REPLACED_BY_STOP in str(exc)):
      return True
    seen.add(id(exc))
    # The explicit cause only: whatever else is raised while the stop is
    # handled has it as its context, and is still worth reporting. But for
    # Beam's re-raise of a DoFn's exception with the step's name added
    # (DoFnRunner._reraise_augmented), which is the same error: it cannot
    # remake an Interrupted, raises a RuntimeError naming it instead, and
    # leaves it as the context only.
    if exc.__cause__ is None and getattr(exc, '_tagged_with_step', False):
      exc = exc.__context__
    else:
      exc = exc.__cause__
  return False


# How Python's C API words the SystemError for an exception that C code
# left pending (Objects/call.c, _Py_CheckFunctionResult).
_UNNOTICED_PENDING = ('returned a result with an exception set',
                      'returned NULL without setting an exception')


def _unnoticed_pending(exc: Optional[BaseException]) -> bool:
  """Whether `exc` is Python's report of an exception that C code left
  pending and did not notice."""
  return isinstance(exc, SystemError) and any(
      words in str(exc) for words in _UNNOTICED_PENDING)


def _unwinding() -> bool:
  """Whether the calling thread is on its way out because of the stop: in
  a `finally` block, an `__exit__` or an `except` clause (or a function they
  call) while an `Interrupted`, or an error raised as it was handled, is
  propagating. A raise repeated there would cut that clean-up short."""
  exc = sys.exc_info()[1]
  seen = set()
  while exc is not None and id(exc) not in seen:
    if caused_by_stop(exc):
      return True
    seen.add(id(exc))
    exc = exc.__context__
  return False


class _DropInterrupted(logging.Filter):
  """Drops a log record about the stop (Beam's DoFn error log)."""

  def __init__(self, is_stop: Callable[[Optional[BaseException]], bool]):
    super().__init__()
    self._is_stop = is_stop

  def filter(self, record: logging.LogRecord) -> bool:
    return not self._is_stop(record.exc_info[1] if record.exc_info else None)


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
    self._insisting = False
    self._watchdog_thread: Optional[threading.Thread] = None
    # Why the watchdog delivered the signal again to the main thread.
    self._redelivery: Optional[str] = None
    self._parked = threading.Event()
    # Held by whichever thread ends the process (abandon, then exit).
    self._ending = threading.Lock()
    # The thread running `abandon`, once one is: the process is ending.
    self._abandoning: Optional[int] = None
    self._done = threading.Event()
    self.signum: Optional[int] = None
    # What reports an Interrupted on its way out while the signals are
    # handled here: the root logger's handlers (filtered) and Python's hook
    # for exceptions it cannot raise (replaced).
    self._drop_interrupted = _DropInterrupted(self._is_stop)
    self._quiet_handlers: List[logging.Handler] = []
    self._previous_unraisablehook = sys.unraisablehook

  def __enter__(self) -> 'StopOnSignals':
    if threading.current_thread() is threading.main_thread():
      self._previous = install(self._handle)
      self._quiet_handlers = list(logging.getLogger().handlers)
      for handler in self._quiet_handlers:
        handler.addFilter(self._drop_interrupted)
      self._previous_unraisablehook = sys.unraisablehook
      sys.unraisablehook = self._unraisable
    return self

  def __exit__(self, *exc_info: object) -> None:
    self._done.set()
    if self._watchdog_thread is not None:
      # A redelivery it sent meanwhile reaches `_handle`, which drops it,
      # not the handler restored below.
      self._watchdog_thread.join()
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()
    for handler in self._quiet_handlers:
      handler.removeFilter(self._drop_interrupted)
    self._quiet_handlers = []
    if sys.unraisablehook == self._unraisable:
      sys.unraisablehook = self._previous_unraisablehook

  def _is_stop(self, exc: Optional[BaseException]) -> bool:
    """Whether reporting `exc` would only report the stop again."""
    return caused_by_stop(exc) or (self.signum is not None and
                                   _unnoticed_pending(exc))

  def _unraisable(self, unraisable: Any) -> None:
    """A raise a destructor or a callback swallowed: the repeat takes care
    of it."""
    if not self._is_stop(unraisable.exc_value):
      self._previous_unraisablehook(unraisable)

  def check(self) -> None:
    """Raises Interrupted if a stop was asked for, even if it was lost."""
    if self.signum is not None:
      raise Interrupted(self.signum)

  @contextlib.contextmanager
  def deferred(self) -> Iterator[None]:
    """A section a signal must not cut in half (e.g. the final rename)."""
    self._deferring = True
    try:
      yield
    finally:
      self._deferring = False

  def reclaim(self) -> List[int]:
    """Handles SIGINT and SIGTERM here again where a library replaced the
    handler; returns the signals it took back.

    Beam's FlinkRunner and SparkRunner start their job server in
    `Pipeline.run()` and point SIGINT at its `stop` method
    (`StopOnExitJobServer`), which Python then calls with arguments it does
    not take: Ctrl-C raised a TypeError that failed the job as an error.
    The preprocess keeps that handler from being installed at all
    (pipeline/remote_job.py); this takes SIGINT and SIGTERM back from any
    other library that replaces the handler.
    """
    taken = []
    for signum in self._previous:
      if signal.getsignal(signum) != self._handle:
        signal.signal(signum, self._handle)
        taken.append(signum)
    return taken

  @contextlib.contextmanager
  def insistent(self) -> Iterator[None]:
    """A section whose libraries may swallow the raise (Beam's job run, a
    tf.data iterator's destructor). The raise is not repeated while the
    section unwinds from it (its `finally` blocks, its `__exit__`s)."""
    self._insisting = True
    try:
      yield
    finally:
      self._insisting = False

  def _handle(self, signum: int, frame: Optional[types.FrameType]) -> None:
    # Python runs signal handlers in the main thread, one at a time, and
    # may run one inside another: even before the first line of the other,
    # when a second signal comes as Python calls the handler for the first.
    # A raise there would unwind the other call before it has seen its
    # signal, and the second signal would be lost.
    nested = frame is not None and frame.f_code is _HANDLE_CODE
    redelivery, self._redelivery = self._redelivery, None
    if self._abandoning == threading.get_ident():
      # This thread is ending the process: neither the watchdog's repeat
      # nor a third Ctrl-C may cut its clean-up short (a raise there ended
      # the process without its last line; a park, without ending it).
      return
    if redelivery is not None:
      if self._done.is_set():
        return  # the stop is over
      if redelivery == 'park' and not self._deferring:
        self._parked.set()
        threading.Event().wait()  # until the watchdog ends the process
      if (self._insisting and not self._deferring and not _unwinding() and
          not nested):
        raise Interrupted(signum)
      return
    if self.signum is not None:
      self._end(signum)  # a second signal; does not return
    self.signum = signum
    self._watchdog_thread = threading.Thread(
        target=self._watchdog,
        args=(signum,),
        daemon=True,
        name='stop-on-signal-watchdog')
    self._watchdog_thread.start()
    if not self._deferring and not nested:
      raise Interrupted(signum)
    # Nested: the call it interrupted now finds a stop asked for, and ends
    # the process as for a second signal.

  def _watchdog(self, signum: int) -> None:
    deadline = time.monotonic() + self._grace_s
    while not self._done.wait(
        min(REPEAT_S, max(0.0, deadline - time.monotonic()))):
      if self._deferring:
        # Not cut, nor what follows it at once.
        deadline = max(deadline, time.monotonic() + REPEAT_S)
      elif time.monotonic() >= deadline:
        if not self._ending.acquire(blocking=False):
          return  # a second signal is ending the process
        self._redeliver('park', signum)
        if self._parked.wait(PARK_WAIT_S) or not (self._done.is_set() or
                                                  self._deferring):
          self._abandon_and_exit(signum)
        self._ending.release()  # the job stopped, or is publishing, after all
      elif self._insisting and self._abandoning is None:
        self._redeliver('repeat', signum)

  def _redeliver(self, why: str, signum: int) -> None:
    """Runs `_handle` in the main thread again, waking it if it waits."""
    main = threading.main_thread().ident
    assert main is not None  # the main thread has started
    self._redelivery = why
    signal.pthread_kill(main, signum)

  def _end(self, signum: int) -> None:
    if not self._ending.acquire(blocking=False):
      self._parked.set()  # the watchdog is ending the process
      threading.Event().wait()
    self._abandon_and_exit(signum)

  def _abandon_and_exit(self, signum: int) -> None:
    self._abandoning = threading.get_ident()
    try:
      self._abandon(signal.Signals(signum).name)
    finally:
      # core.cli runs every command's body under this class.
      from core import cli  # pylint: disable=g-import-not-at-top
      cli.exit_now(128 + signum)


# The code of the handler, to tell a call of it nested in another.
_HANDLE_CODE = StopOnSignals._handle.__code__  # pylint: disable=protected-access
