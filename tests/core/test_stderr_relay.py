"""The stderr relay drops the runtime's noise and loses nothing else, also
when the command crashes, is interrupted or leaves a child running."""

import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

from core import quiet
from core import stderr_relay
from tests.conftest import ROOT

NOISE_LINE = (b'2026-12-02 22:59:40.535419: W tensorflow/core/framework/'
              b'local_rendezvous.cc:404] Local rendezvous is aborting with '
              b'status: OUT_OF_RANGE: End of sequence\n')
CONTINUATION = b'\t [[{{node IteratorGetNext}}]]\n'


def _relayed(data: bytes) -> bytes:
  """What the relay writes for `data` written at once and then closed."""
  src_r, src_w = os.pipe()
  out_r, out_w = os.pipe()
  os.write(src_w, data)
  os.close(src_w)
  stderr_relay.relay(re.compile(quiet.RUNTIME_NOISE.encode()), src_r, out_w)
  os.close(src_r)
  os.close(out_w)
  with os.fdopen(out_r, 'rb') as out:
    return out.read()


def test_only_the_end_of_sequence_notice_and_its_op_line_are_dropped():
  other_abort = NOISE_LINE.replace(b'OUT_OF_RANGE: End of sequence',
                                   b'CANCELLED: Cancelled')
  data = b''.join([
      b'first\n', NOISE_LINE, CONTINUATION, b'kept\n', CONTINUATION, NOISE_LINE,
      b'Traceback (most recent call last):\n', other_abort, CONTINUATION,
      b'no newline at the end'
  ])
  assert _relayed(data) == b''.join([
      b'first\n', b'kept\n', CONTINUATION,
      b'Traceback (most recent call last):\n', other_abort, CONTINUATION,
      b'no newline at the end'
  ])


def test_the_tf1_sessions_notes_are_dropped_and_other_operations_kept():
  """tf.Transform's TF1 session: the MLIR notice, and the note on a
  vocabulary table's initializer (the same note on any other operation is
  not known harmless, and prints)."""
  mlir = (b'2026-12-04 19:41:33.369040: I tensorflow/compiler/mlir/'
          b'mlir_graph_optimization_pass.cc:388] MLIR V1 optimization pass is '
          b'not enabled\n')

  def changed(node, op):
    return (b"2026-12-04 19:41:45.076864: W tensorflow/c/c_api.cc:305] "
            b"Operation '{name:'" + node + b"' id:1169 op device:{requested: "
            b"'', assigned: ''} def:{{{node " + node + b"}} = " + op +
            b"[delimiter=\"\\t\"](hash_table, Const_7:0)}}' was changed by "
            b"setting attribute after it was run by a session. This mutation "
            b"will have no effect, and will trigger an error in the future. "
            b"Either don't modify nodes after running them or create a new "
            b"session.\n")

  table = changed(
      b'transform/transform/sex/apply_vocab/text_file_init/'
      b'InitializeTableFromTextFileV2', b'InitializeTableFromTextFileV2')
  other = changed(b'transform/transform/age/Mul', b'Mul')
  assert _relayed(b''.join([mlir, table, b'kept\n',
                            other])) == (b'kept\n' + other)


def test_a_partial_line_is_passed_on_without_waiting_for_its_end():
  src_r, src_w = os.pipe()
  out_r, out_w = os.pipe()
  noise = re.compile(quiet.RUNTIME_NOISE.encode())
  thread = threading.Thread(
      target=stderr_relay.relay, args=(noise, src_r, out_w), daemon=True)
  thread.start()
  try:
    os.write(src_w, b'Progress: 10%')
    ready, _, _ = select.select([out_r], [], [], 5.0)
    assert ready, 'the partial line was held back'
    assert os.read(out_r, 100) == b'Progress: 10%'
  finally:
    os.close(src_w)
    thread.join(5.0)
    for fd in (src_r, out_r, out_w):
      os.close(fd)
  assert not thread.is_alive()


def _command(body: str) -> list:
  """A Python process that relays its stderr, then runs `body`."""
  code = textwrap.dedent("""
      import os, signal, subprocess, sys, time
      from core import quiet, stderr_relay
      quiet.filter_runtime_noise()
      print(stderr_relay._relay[0].pid, flush=True)
      """) + textwrap.dedent(body)
  return [sys.executable, '-c', code]


def _env() -> dict:
  return dict(os.environ, PYTHONPATH=str(ROOT))


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    try:
      with open(f'/proc/{pid}/stat', encoding='ascii') as f:
        if f.read().rsplit(')', 1)[1].split()[0] in ('Z', 'X'):
          return True
    except FileNotFoundError:
      return True
    time.sleep(0.05)
  return False


def _run(body: str, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(
      _command(body),
      cwd=str(ROOT),
      env=_env(),
      capture_output=True,
      timeout=60,
      check=False,
      **kwargs)


def test_a_command_ends_with_everything_it_wrote_and_no_relay_left():
  proc = _run(f"""
      os.write(2, {NOISE_LINE!r} + {CONTINUATION!r})
      print('a warning of its own', file=sys.stderr)
      os.write(2, b'W native warning\\n')
      sys.exit(3)
      """)
  assert proc.returncode == 3
  assert proc.stderr == b'a warning of its own\nW native warning\n'
  assert _gone(int(proc.stdout.split()[0]))


def test_what_was_written_before_a_crash_still_arrives():
  proc = _run("""
      print('the last words', file=sys.stderr, flush=True)
      os.kill(os.getpid(), signal.SIGKILL)
      """)
  assert proc.returncode == -signal.SIGKILL
  assert proc.stderr == b'the last words\n'
  assert _gone(int(proc.stdout.split()[0]))


def test_a_hard_exit_through_exit_now_waits_for_the_relay():
  proc = _run("""
      from core import cli
      print('stopped by Ctrl-C', file=sys.stderr)
      cli.exit_now(130)
      """)
  assert proc.returncode == 130
  assert proc.stderr == b'stopped by Ctrl-C\n'


def test_ctrl_c_to_the_process_group_leaves_the_relay_to_print_the_stop():
  # A terminal's Ctrl-C reaches every process of the foreground group, the
  # relay too; the command's own message about stopping must still show.
  body = """
      def stop(signum, frame):
        time.sleep(0.3)
        print('stopping: cleaning up', file=sys.stderr)
        sys.exit(130)
      signal.signal(signal.SIGINT, stop)
      print('ready', flush=True)
      time.sleep(30)
      """
  with subprocess.Popen(
      _command(body),
      cwd=str(ROOT),
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      start_new_session=True) as proc:
    relay_pid = int(proc.stdout.readline())
    assert proc.stdout.readline() == b'ready\n'
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
  assert proc.returncode == 130
  assert err == b'stopping: cleaning up\n'
  assert _gone(relay_pid)


def test_a_child_left_running_does_not_hold_the_command_at_exit(tmp_path):
  # The child inherits the relay's pipe as its stderr; the command exits
  # after STOP_WAIT_S at most, and the relay ends with the child.
  err_path = tmp_path / 'stderr'
  with open(err_path, 'wb') as err:
    start = time.monotonic()
    proc = subprocess.run(
        _command("""
            child = subprocess.Popen(['sleep', '30'], stdout=subprocess.DEVNULL)
            print(child.pid, flush=True)
            print('leaving', file=sys.stderr)
            """),
        cwd=str(ROOT),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=err,
        timeout=30,
        check=False)
    took = time.monotonic() - start
  relay_pid, child_pid = (int(x) for x in proc.stdout.split())
  try:
    assert proc.returncode == 0
    assert took < stderr_relay.STOP_WAIT_S + 5
    assert err_path.read_bytes() == b'leaving\n'
    assert not _gone(relay_pid, timeout_s=0.2)  # still relaying the child
  finally:
    os.kill(child_pid, signal.SIGKILL)
  assert _gone(relay_pid)
