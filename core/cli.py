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
import logging
import os
import signal
import sys
import types
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type

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
  _stop_in_one_line_while_starting(name, stop_status)


class _StoppedWhileStarting(BaseException):
  """A stop signal arrived before the command started. Not an Exception (no
  `except Exception` in a library's import swallows it) and not a
  KeyboardInterrupt (which Python would end by killing itself with SIGINT)."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# While a command starts: the signal handlers and the excepthook it had
# before parse_first, which started() puts back.
_starting: Optional[Tuple[Dict[signal.Signals, Any], Any]] = None


def _stop_in_one_line_while_starting(name: str,
                                     stop_status: Optional[int]) -> None:
  global _starting

  def stop(signum: int, frame: Optional[types.FrameType]) -> None:
    # Raised, not handled here: on its way out the exception leaves the
    # import's stderr filter (core/quiet.py), which puts back file
    # descriptor 2 and what was printed to it, before the line is printed.
    raise _StoppedWhileStarting(signum)

  def report(exc_type: Type[BaseException], exc: BaseException,
             tb: Optional[types.TracebackType]) -> None:
    if not isinstance(exc, _StoppedWhileStarting):
      previous_hook(exc_type, exc, tb)
      return
    print(
        f'{name}: stopped by {exc} while starting; nothing done',
        file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except (OSError, ValueError):
        pass
    # An uncaught exception would exit 1; nothing needs Python's shutdown.
    os._exit(128 + exc.signum if stop_status is None else stop_status)

  previous_hook = sys.excepthook
  handlers = {s: signal.signal(s, stop) for s in _STOP_SIGNALS}
  sys.excepthook = report
  _starting = (handlers, previous_hook)


def started() -> None:
  """From here on the command handles SIGINT and SIGTERM itself (as it did
  before parse_first); a no-op when parse_first was not called."""
  global _starting
  if _starting is None:
    return
  handlers, hook = _starting
  _starting = None
  for signum, handler in handlers.items():
    signal.signal(signum, handler)
  sys.excepthook = hook


def run(name: str, body: Callable[[], int]) -> int:
  """Runs a command's body with the shared logging and error handling."""
  started()
  logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
  try:
    return body()
  except UserError as e:
    print(f'{name}: error: {e}', file=sys.stderr)
    return USAGE
