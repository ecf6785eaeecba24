"""A command's file descriptor 2 through a small filtering process.

TensorFlow 2.16 logs `W ... local_rendezvous.cc:404] Local rendezvous is
aborting with status: OUT_OF_RANGE: End of sequence` from its C++ runtime
each time a tf.data iterator reaches its end (tensorflow/tensorflow#62963):
about a dozen lines per trainer.task run, four per trainer.push. Native code
writes straight to the file descriptor, so no Python logging filter sees the
line, and TF_CPP_MIN_LOG_LEVEL=2 would hide every other warning of the C++
runtime with it.

`start()` points the process's file descriptor 2 at a pipe read by a relay
process (this file, run as a script under `python -I -S`), which passes
every line on at once except the lines matching the pattern it was given
(and the `\\t [[...]]` lines that continue such a message). A relay process,
not a thread: what is written before a crash, an `os._exit` or a SIGKILL is
already in the pipe, and the relay drains it after the command is gone; the
command's child processes (Beam's worker processes) inherit the pipe and are
filtered too. The relay runs in a process group of its own, so a
terminal's Ctrl-C or a kill of the command's process group does not reach
it: it is there to pass on what the command prints while it stops, and it
ends when the last writer of the pipe has closed it. (It ignores SIGTTOU,
so it may write to a terminal with `stty tostop` as the command could.)
`stop()` (at exit, and before an `os._exit`) gives the command its own file
descriptor 2 back and waits for the relay to write out what it holds, so
nothing the command printed arrives after it has exited.

Imports only the standard library: the relay runs without site-packages.
"""

import atexit
import os
import re
import select
import signal
import subprocess
import sys
from typing import Optional, Tuple

# A partial line (no newline yet) is passed on once nothing more has come for
# this long: a prompt or a progress line written without its end.
PARTIAL_LINE_S = 0.05
# How long stop() waits for the relay to write out what it holds. It only
# waits longer than an instant when another process still holds the pipe
# (a child of the command still running); the relay then ends with that one.
STOP_WAIT_S = 2.0
# The lines that continue a dropped message (TensorFlow puts the op that hit
# the end of the sequence on a line of its own: "\t [[{{node ...}}]]").
_CONTINUATION = b'\t [['

# (relay process, the descriptor 2 it writes to, the process that started it)
_relay: Optional[Tuple[subprocess.Popen, int, int]] = None


def start(noise: str) -> bool:
  """Filters this process's file descriptor 2 from now on (lines matching the
  `noise` regular expression are dropped); False where it cannot (no real
  descriptor 2, a relay already running, no process could be started)."""
  global _relay
  if _relay is not None:
    return False
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):
    return False
  read_end, write_end = os.pipe()
  try:
    proc = subprocess.Popen(
        [sys.executable, '-I', '-S',
         os.path.abspath(__file__), noise],
        stdin=read_end,
        stdout=saved,
        stderr=saved,
        close_fds=True,
        process_group=0)
  except OSError:
    os.close(saved)
    os.close(write_end)
    return False
  finally:
    os.close(read_end)
  os.dup2(write_end, 2)
  os.close(write_end)
  _relay = (proc, saved, os.getpid())
  atexit.register(stop)
  return True


def stop() -> None:
  """Gives file descriptor 2 back and waits for the relay to finish; safe to
  call more than once and where no relay was started."""
  global _relay
  if _relay is None or _relay[2] != os.getpid():
    return  # none started, or a forked copy of the process that started it
  proc, saved, _ = _relay
  _relay = None
  try:
    sys.stderr.flush()
  except (OSError, ValueError, AttributeError):
    pass
  os.dup2(saved, 2)
  os.close(saved)
  try:
    proc.wait(STOP_WAIT_S)
  except subprocess.TimeoutExpired:
    pass  # a child process still holds the pipe; the relay ends with it


def relay(noise: 're.Pattern[bytes]', in_fd: int, out_fd: int) -> None:
  """Copies in_fd to out_fd line by line, without the lines matching `noise`
  and their continuation lines, until in_fd's end."""
  pending = b''
  dropping = False
  writable = True

  def write(data: bytes) -> None:
    nonlocal writable
    while data and writable:
      try:
        data = data[os.write(out_fd, data):]
      except InterruptedError:
        continue
      except OSError:
        # Where the output has gone (a closed terminal), keep reading and
        # discard, so that the writers never fail on a broken pipe.
        writable = False

  while True:
    ready, _, _ = select.select([in_fd], [], [],
                                PARTIAL_LINE_S if pending else None)
    if not ready:
      write(pending)
      pending, dropping = b'', False
      continue
    chunk = os.read(in_fd, 1 << 16)
    if not chunk:
      break
    *lines, pending = (pending + chunk).split(b'\n')
    kept = []
    for line in lines:
      if noise.search(line):
        dropping = True
      elif not (dropping and line.startswith(_CONTINUATION)):
        dropping = False
        kept.append(line + b'\n')
    write(b''.join(kept))
  write(pending)


def _main() -> None:
  signal.signal(signal.SIGTTOU, signal.SIG_IGN)
  relay(re.compile(sys.argv[1].encode()), 0, 1)


if __name__ == '__main__':
  _main()
