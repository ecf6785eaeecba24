"""One run at a time writes a directory: an exclusive lock on a file beside
it (or in it) that names the run holding it.

The lock is the kernel's (flock), so a run killed outright holds nothing: its
file is left unlocked and the next run takes it. The holder removes the file
before it lets go. For a directory on an object store (gs://) the lock file
is in this machine's temporary directory, named by the directory's URL, so
it keeps apart the runs of one machine only.
"""

import datetime
import errno
import fcntl
import hashlib
import os
import socket
import tempfile
from typing import Optional

from core.errors import UserError


class DirectoryBusy(UserError):
  """Another run holds the directory's lock."""


def lock_file(path: str) -> str:
  """`path` on this machine's file system, or where to lock a remote one."""
  if path.startswith('file://'):
    return path[len('file://'):]
  if '://' not in path:
    return path
  digest = hashlib.sha256(path.encode()).hexdigest()[:16]
  return os.path.join(tempfile.gettempdir(), f'remote-dir-{digest}.lock')


class DirLock:
  """Holds the lock on `path` from construction to `release()` (or the end
  of a `with` block); `what` names the directory in the messages, as the
  flag that gave it.

  A run that opened the file just before its holder removed it, and then
  got the lock, holds a removed file: it checks that the path still is the
  file it locked, and opens it anew if not.
  """

  def __init__(self, path: str, what: str):
    self.path = lock_file(path)
    self._fd: Optional[int] = None
    try:
      os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
      while self._fd is None:
        self._fd = self._open_locked(what)
      started = datetime.datetime.now(
          datetime.timezone.utc).isoformat(timespec='seconds')
      os.ftruncate(self._fd, 0)
      os.write(
          self._fd,
          f'pid {os.getpid()} on {socket.gethostname()}, since {started}\n'
          .encode())
    except OSError as e:
      self.release()
      raise UserError(f'{what}: cannot create {self.path} '
                      f'({e.strerror or e})') from e

  def _open_locked(self, what: str) -> Optional[int]:
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.read(fd, 200).decode(errors='replace').strip()
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
        raise
      raise DirectoryBusy(
          f'{what}: another run is writing it'
          f'{f" ({holder})" if holder else ""}; wait for it to end or '
          f'choose another directory (it holds {self.path})') from None
    try:
      current: Optional[int] = os.stat(self.path).st_ino
    except FileNotFoundError:
      current = None
    if current == os.fstat(fd).st_ino:
      return fd
    os.close(fd)
    return None

  def __enter__(self) -> 'DirLock':
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.release()

  def release(self) -> None:
    if self._fd is None:
      return
    fd, self._fd = self._fd, None
    try:
      os.unlink(self.path)
    except FileNotFoundError:
      pass
    os.close(fd)
