"""core.forked: a result worked out by a forked child, or here when the
child gives none; no child outlives its use or its parent."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from core import forked

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith('linux'), reason='the child is forked on Linux')


def _gone(pid: int, within_s: float = 5.0) -> bool:
  """Whether process `pid` has ended (and been reaped) within the time."""
  deadline = time.monotonic() + within_s
  while time.monotonic() < deadline:
    try:
      with open(f'/proc/{pid}/stat') as f:
        if f.read().split(') ')[-1].startswith('Z'):
          return False  # ended, not reaped
    except FileNotFoundError:
      return True
    time.sleep(0.05)
  return False


def _wait_for_pid(path, within_s: float = 10.0) -> int:
  deadline = time.monotonic() + within_s
  while time.monotonic() < deadline:
    if path.exists() and path.read_text().endswith('\n'):
      return int(path.read_text())
    time.sleep(0.02)
  raise AssertionError(f'no pid in {path}')


def _in_child_only(parent: int, path):
  """A function that, in a child, writes its pid and then works for a
  minute; here it answers at once."""

  def work():
    if os.getpid() == parent:
      return 'here'
    path.write_text(f'{os.getpid()}\n')
    time.sleep(60)
    return 'child'

  return work


def test_the_result_comes_from_a_child():
  parent = os.getpid()
  with forked.Ahead(lambda: ('pid', os.getpid(), [1.5, None])) as ahead:
    assert ahead.forked
    tag, pid, payload = ahead.result()
  assert (tag, payload) == ('pid', [1.5, None])
  assert pid != parent
  assert _gone(pid)


def test_a_none_from_the_child_is_its_result():
  calls = []

  def work():
    calls.append(os.getpid())  # only recorded here if run here
    return None

  with forked.Ahead(work) as ahead:
    assert ahead.result() is None
  assert calls == []


def test_a_child_that_fails_leaves_the_work_to_this_process():
  parent = os.getpid()

  def work():
    if os.getpid() != parent:
      raise OSError('only in the child')
    return 'here'

  with forked.Ahead(work) as ahead:
    assert ahead.forked
    assert ahead.result() == 'here'


def test_an_error_of_the_work_itself_is_raised_here():

  def work():
    raise ValueError(f'bad input seen by {os.getpid()}')

  with forked.Ahead(work) as ahead:
    with pytest.raises(ValueError, match=f'seen by {os.getpid()}$'):
      ahead.result()


def test_a_result_that_cannot_be_pickled_is_worked_out_here():
  parent = os.getpid()
  with forked.Ahead(lambda: (lambda: os.getpid())) as ahead:
    assert ahead.result()() == parent


def test_without_start_the_work_is_done_here_when_asked():
  calls = []
  ahead = forked.Ahead(lambda: calls.append(os.getpid()) or 'done', start=False)
  assert not ahead.forked
  assert calls == []
  assert ahead.result() == 'done'
  assert calls == [os.getpid()]


def test_close_kills_a_child_still_working(tmp_path):
  pid_file = tmp_path / 'pid'
  ahead = forked.Ahead(_in_child_only(os.getpid(), pid_file))
  child = _wait_for_pid(pid_file)
  start = time.monotonic()
  ahead.close()
  assert time.monotonic() - start < 5
  assert _gone(child)
  ahead.close()  # idempotent
  assert not ahead.forked


def test_a_child_killed_from_outside_leaves_the_work_here(tmp_path):
  pid_file = tmp_path / 'pid'
  with forked.Ahead(_in_child_only(os.getpid(), pid_file)) as ahead:
    child = _wait_for_pid(pid_file)
    os.kill(child, signal.SIGKILL)
    assert ahead.result() == 'here'
  assert _gone(child)


def test_a_stop_ends_the_child_without_this_process_handlers(tmp_path):
  """Ctrl-C reaches the whole process group: the child must not run the
  command's stop handling (which removes output and prints a line)."""
  handled = tmp_path / 'handled'

  def handler(signum, frame):
    handled.write_text(f'{os.getpid()}\n')

  pid_file = tmp_path / 'pid'
  previous = signal.signal(signal.SIGINT, handler)
  try:
    with forked.Ahead(_in_child_only(os.getpid(), pid_file)) as ahead:
      child = _wait_for_pid(pid_file)
      os.kill(child, signal.SIGINT)
      assert ahead.result() == 'here'
  finally:
    signal.signal(signal.SIGINT, previous)
  assert _gone(child)
  assert not handled.exists()


def test_the_child_dies_with_its_parent(tmp_path):
  pid_file = tmp_path / 'pid'
  program = textwrap.dedent(f"""
      import os, pathlib, time
      from core import forked
      path = pathlib.Path({str(pid_file)!r})
      def work():
        path.write_text(f'{{os.getpid()}}\\n')
        time.sleep(60)
      ahead = forked.Ahead(work)
      time.sleep(60)
      """)
  parent = subprocess.Popen([sys.executable, '-c', program])
  try:
    child = _wait_for_pid(pid_file)
    parent.kill()
    parent.wait(timeout=10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and os.path.exists(f'/proc/{child}'):
      time.sleep(0.05)
    # Reaped by init once killed: no /proc entry left.
    assert not os.path.exists(f'/proc/{child}')
  finally:
    if parent.poll() is None:
      parent.kill()
      parent.wait()
