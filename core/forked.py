"""A result worked out in a forked child while this process goes on.

The preprocess builds its job graph on one thread for several seconds, and a
two-core machine's other core sits idle meanwhile. Work that needs nothing
from the job (the feature checks' sample of the input) can run there: a
child forked from this process has every module and value it needs already,
so it starts at once, and it hands back its result through a pipe.

Nothing depends on the child: if it cannot be forked, fails, is killed or
returns something that cannot be pickled, `result()` does the work here, as
if there had been no child, with the same result or the same exception.
`close()` (or leaving the `with` block) kills a child still working and
reaps it; a child also dies with this process.
"""

import ctypes
import ctypes.util
import os
import pickle
import signal
import sys
from typing import Callable, Generic, Optional, Tuple, TypeVar

T = TypeVar('T')

# The stops a child dies of without running this process's handlers.
_STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # prctl option, from linux/prctl.h
# The child yields the CPU to this process whenever both want it.
_CHILD_NICENESS = 10
_READ_BYTES = 1 << 16


def _die_with_parent(parent: int) -> None:
  """SIGKILL for the child when the process that forked it ends (Linux)."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  except (OSError, AttributeError):
    pass
  if os.getppid() != parent:  # it ended before prctl took effect
    os._exit(1)


def _child(fn: Callable[[], T], write_fd: int, parent: int) -> None:
  """Runs in the forked child; never returns."""
  code = 1
  try:
    for signum in _STOPS:
      signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)
    _die_with_parent(parent)
    os.nice(_CHILD_NICENESS)
    data = memoryview(pickle.dumps(fn(), protocol=pickle.HIGHEST_PROTOCOL))
    while data:
      data = data[os.write(write_fd, data):]
    code = 0
  except BaseException:  # noqa: BLE001 - the parent does the work instead
    pass
  finally:
    # No exit handlers, destructors or buffered output of the parent's.
    os._exit(code)


class Ahead(Generic[T]):
  """`fn()` started in a forked child when `start` is true and this is
  Linux; its value from `result()`, computed here if the child gave none."""

  def __init__(self, fn: Callable[[], T], start: bool = True):
    self._fn = fn
    self._pid: Optional[int] = None
    self._read_fd: Optional[int] = None
    if start and sys.platform.startswith('linux'):
      self._fork()

  def _fork(self) -> None:
    parent = os.getpid()
    read_fd, write_fd = os.pipe()
    # Blocked across the fork, so that a stop arriving then reaches the
    # child only once it has dropped this process's handlers.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
    try:
      pid = os.fork()
    except OSError:
      signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
      os.close(read_fd)
      os.close(write_fd)
      return
    if pid == 0:
      os.close(read_fd)
      _child(self._fn, write_fd, parent)
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    os.close(write_fd)
    self._pid, self._read_fd = pid, read_fd

  @property
  def forked(self) -> bool:
    """Whether a child is working on the result (until `result()` or
    `close()`)."""
    return self._pid is not None

  def _from_child(self) -> Tuple[bool, Optional[T]]:
    """(whether the child gave a value, the value); waits for it to end."""
    assert self._read_fd is not None
    chunks = []
    while True:
      chunk = os.read(self._read_fd, _READ_BYTES)
      if not chunk:
        break
      chunks.append(chunk)
    if self._reap() != 0:
      return False, None
    try:
      return True, pickle.loads(b''.join(chunks))
    except Exception:  # noqa: BLE001 - a result cut short
      return False, None

  def result(self) -> T:
    """The child's result; `fn()` run here if there is none."""
    if self._pid is not None:
      try:
        given, value = self._from_child()
      finally:
        self.close()
      if given:
        return value  # type: ignore[return-value]
    return self._fn()

  def _reap(self) -> Optional[int]:
    """The child's exit status once it has ended (negative: a signal)."""
    pid, self._pid = self._pid, None
    if pid is None:
      return None
    try:
      _, status = os.waitpid(pid, 0)
    except ChildProcessError:
      return None
    return os.waitstatus_to_exitcode(status)

  def close(self) -> None:
    """Kills a child still working and reaps it; idempotent."""
    if self._pid is not None:
      try:
        os.kill(self._pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      self._reap()
    if self._read_fd is not None:
      os.close(self._read_fd)
      self._read_fd = None

  def __enter__(self) -> 'Ahead[T]':
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()
