"""The skeleton every command shares: logging, exit codes, one-line errors.

Each command (`python -m pipeline.preprocess`, `trainer.task`, `serving`,
...) is a `main(argv) -> int` whose body raises `UserError` for anything a
user can fix: a bad flag value, a missing file, an unusable config. `run`
turns that into one line on stderr, `<command>: error: <what and where>`,
and exit code 2, so no user ever reads a traceback for their own mistake.
What a command finds in the data (anomalies, skew, a model not good enough
to push) is exit code 1; success is 0.
"""

import argparse
import atexit
import logging
import os
import signal
import sys
import threading
import types
from typing import (
    Any,
    Callable,
    NoReturn,
    Optional,
    Sequence,
    Type,
)

from core import interrupts
from core import quiet
from core import stderr_relay
from core.errors import UserError

OK = 0
FINDINGS = 1  # the command ran and found what it checks for
USAGE = 2  # bad flags, config or input: nothing was done


def parser(module: str, description: str) -> argparse.ArgumentParser:
  """An argument parser whose usage line shows how the command is run."""
  return argparse.ArgumentParser(
      prog=f'python -m {module}', description=description)


def parse_first(parse: Callable[[Optional[Sequence[str]]], Any],
                name: str,
                stop_status: Optional[int] = None) -> None:
  """Parses the command line with `parse`, which needs nothing but argparse.

  A command module calls it, when it runs as the command, before it imports
  TensorFlow, TFDV or Beam (5 to 8 s on two cores): `--help` and a flag
  mistake are answered (argparse exits) at once instead of after the
  imports. The command parses the same flags again when it runs.

  Until the command starts (`started()`), Ctrl-C or SIGTERM ends it with one
  line, `<name>: stopped by SIGINT while starting; nothing done`, and exit
  status 128 + the signal (`stop_status` if given), where Python would print
  a KeyboardInterrupt's traceback through the import machinery (SIGINT) or
  end without a word (SIGTERM). Nothing is written before the command runs.
  """
  parse(sys.argv[1:])
  global _starting
  _starting = _StopWhileStarting(name, stop_status)


def started() -> None:
  """From here on the command handles SIGINT and SIGTERM itself (as it did
  before parse_first); a stop that arrived while it started, and that an
  import swallowed, ends it here. A no-op when parse_first was not called."""
  global _starting
  if _starting is not None:
    starting, _starting = _starting, None
    starting.end()


class _StoppedWhileStarting(BaseException):
  """A stop signal arrived before the command started. Not an Exception (no
  `except Exception` in a library's import swallows it) and not a
  KeyboardInterrupt (which Python would end by killing itself with SIGINT)."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


class _StopWhileStarting:
  """SIGINT and SIGTERM raise `_StoppedWhileStarting`, which unwinds the
  imports; the excepthook turns it into the one line and the exit status.

  Raised, not handled in the signal handler: on its way out the exception
  leaves the imports' stderr filter (core/quiet.py), which puts back file
  descriptor 2 and what was printed to it, before the line is printed. A
  raise that lands in a weakref callback or a destructor is swallowed and
  the imports go on: it is remembered (and not printed as "Exception
  ignored"), and `end()` stops the command before anything runs.
  """

  def __init__(self, name: str, stop_status: Optional[int]):
    self._name = name
    self._stop_status = stop_status
    self._requested: Optional[int] = None
    try:
      self._stderr: Optional[int] = os.dup(2)  # the command's own stderr
    except OSError:
      self._stderr = None
    self._excepthook = sys.excepthook
    self._unraisablehook = sys.unraisablehook
    self._handlers = interrupts.install(self._raise)
    sys.excepthook = self._uncaught
    sys.unraisablehook = self._unraisable

  def end(self) -> None:
    for signum, handler in self._handlers.items():
      signal.signal(signum, handler)
    sys.excepthook = self._excepthook
    sys.unraisablehook = self._unraisablehook
    if self._requested is not None:
      self._exit(self._requested)
    if self._stderr is not None:
      os.close(self._stderr)

  def _raise(self, signum: int, frame: Optional[types.FrameType]) -> None:
    self._requested = signum
    raise _StoppedWhileStarting(signum)

  def _uncaught(self, exc_type: Type[BaseException], exc: BaseException,
                tb: Optional[types.TracebackType]) -> None:
    if isinstance(exc, _StoppedWhileStarting):
      self._exit(exc.signum)
    self._excepthook(exc_type, exc, tb)

  def _unraisable(self, unraisable: Any) -> None:
    if not isinstance(unraisable.exc_value, _StoppedWhileStarting):
      self._unraisablehook(unraisable)

  def _exit(self, signum: int) -> None:
    if self._stderr is not None and quiet.stderr_is_held():
      # The stop left the imports' stderr filter before it could put
      # descriptor 2 back (what it held, the imports' noise, is dropped).
      os.dup2(self._stderr, 2)
    print(
        f'{self._name}: stopped by {signal.Signals(signum).name} while '
        'starting; nothing done',
        file=sys.stderr)
    # From the excepthook, an uncaught exception would exit 1; nothing needs
    # Python's shutdown.
    exit_now(128 + signum if self._stop_status is None else self._stop_status)


# The stop handling of a command that is starting (parse_first until
# started()).
_starting: Optional[_StopWhileStarting] = None


def run(name: str,
        body: Callable[[], int],
        body_calls_started: bool = False) -> int:
  """Runs a command's body with the shared logging and error handling.

  While the body runs, Ctrl-C or SIGTERM stops it (core/interrupts.py): the
  stop is raised where the body is and unwinds it, so what it had half
  written is removed on the way out, and the command ends with one line,
  `<name>: stopped by SIGINT`, and exit status 128 + the signal, where
  Python would print a KeyboardInterrupt's traceback through TensorFlow
  (SIGINT) or end without a word, its partial files left behind (SIGTERM).
  A body that has not stopped 10 s after the signal, or a second signal,
  ends the process at once with the same line. A stopped command runs its
  exit handlers and ends in `exit_now`, without the interpreter's
  finalization.

  body_calls_started: the body calls `started()` itself, where its own
  handling of SIGINT and SIGTERM begins, so that no moment of its own
  set-up is left to Python's defaults.
  """
  logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
  if body_calls_started:
    return _run_body(name, body, None)
  started()
  global _stopping
  try:
    # Entered once logging has its handler: the stop is not logged again on
    # its way out (Beam logs what a DoFn raised, with its traceback).
    with interrupts.StopOnSignals(
        lambda signal_name: _say_stopped(name, signal_name)) as stopping:
      _stopping = stopping
      try:
        # Libraries swallow the stop's raise where it lands in a destructor
        # or a callback (a tf.data iterator's, Beam's): it is raised again
        # until it unwinds the body.
        with stopping.insistent():
          return _run_body(name, body, stopping)
      finally:
        _stopping = None
  except KeyboardInterrupt:  # SIGINT before the stop's handlers were set
    _say_stopped(name, 'SIGINT')
    exit_now(128 + signal.SIGINT)


def _run_body(name: str, body: Callable[[], int],
              stopping: Optional[interrupts.StopOnSignals]) -> int:
  try:
    return body()
  except BaseException as e:
    if stopping is not None and stopping.signum is not None:
      # Whatever ended the body, the stop did: Interrupted itself, or what
      # it caused where it landed (an error raised in a C extension or a
      # destructor, which a library may even have reported as the user's).
      _say_stopped(name, signal.Signals(stopping.signum).name)
      # Ended here, while the traceback still holds what the body was
      # using: freed, TensorFlow's half-read datasets would log warnings
      # about it after the line. The exit handlers run, as after any stop
      # Python handles: AutoGraph removes the modules it generated in the
      # temporary directory there. (Still under the stop's watchdog, which
      # ends the process if they hang.)
      _exit_after_handlers(128 + stopping.signum)
    if isinstance(e, UserError):
      print(f'{name}: error: {e}', file=sys.stderr)
      return USAGE
    raise


def _say_stopped(name: str, signal_name: str) -> None:
  """The one line, once (the watchdog may end a stop that was said)."""
  global _said_stopped
  if not _said_stopped:
    _said_stopped = True
    print(f'{name}: stopped by {signal_name}', file=sys.stderr)


_said_stopped = False

# The stop handling of the command body that is running (in `run`).
_stopping: Optional[interrupts.StopOnSignals] = None


def check_stop() -> None:
  """Raises the stop if one was asked for, even if a library swallowed its
  raise and it has not been raised again yet: a body calls it before it
  publishes what it made (a rename)."""
  if _stopping is not None:
    _stopping.check()


def finish(code: int) -> NoReturn:
  """Ends a command that ran to its end with `code`, as Python's exit
  would, but without tearing the interpreter down.

  Its other threads are waited for and its exit handlers run (logging's
  flush, temporary directories, child processes, the stderr relay); what is
  skipped is the interpreter's finalization, which frees every object of
  TensorFlow, Beam and TFDV one by one: 0.35 to 1.5 s between a command's
  last line and its end (trainer.predict 0.75-1.0 s, pipeline.skew 1.2-1.5
  s), for nothing a user needs. A command's files are closed by then
  (`with`).
  """
  for thread in threading.enumerate():
    if thread is not threading.current_thread() and not thread.daemon:
      thread.join()
  _exit_after_handlers(code)


# How long a stopped command's exit handlers may run before it ends anyway,
# where no stop watchdog guards them (`exit_stopped`).
STOPPED_EXIT_S = 5.0


def exit_stopped(code: int, timeout_s: float = STOPPED_EXIT_S) -> NoReturn:
  """Ends a command whose stop it handled itself (the preprocess's job),
  after its exit handlers, as after any stop Python handles: Beam's
  FlinkRunner and SparkRunner stop the job server they started there (a
  Java process left running otherwise). Handlers still running after
  `timeout_s` do not hold the process."""
  timer = threading.Timer(timeout_s, exit_now, (code,))
  timer.daemon = True
  timer.start()
  _exit_after_handlers(code)


def _exit_after_handlers(code: int) -> NoReturn:
  """Runs the exit handlers (`atexit`), then `exit_now`."""
  flush_std_streams()
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  exit_now(code)


def exit_now(code: int) -> NoReturn:
  """Flushes and ends the process without finalizing the interpreter.

  For a command stopped half-way (a job abandoned by a signal, a stop while
  it starts): its threads and TensorFlow objects are in no state to be torn
  down, and what finalization would print about them is noise after the one
  line that matters.
  """
  logging.shutdown()
  flush_std_streams()
  # What the stderr relay holds is written out before the process is gone
  # (atexit, which stops it otherwise, does not run here).
  stderr_relay.stop()
  os._exit(code)  # pylint: disable=protected-access


def flush_std_streams() -> None:
  """Flushes Python's stdout and stderr, whatever state they are in."""
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
