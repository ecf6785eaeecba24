"""A stop while a command starts (core.cli.parse_first until started()): one
line and 128 + the signal, wherever the signal lands; the command's own
handling afterwards. Each case runs a small command in a fresh interpreter
that signals itself at a chosen point (tests/test_quiet_commands.py stops
the real commands while they import their libraries)."""

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT
from tests.conftest import run_python

pytestmark = pytest.mark.usefixtures('sigint_from_a_terminal')

_PROLOGUE = '''
import os, signal, sys, time
from core import cli
BEFORE
cli.parse_first(lambda argv: None, 'demo', STOP_STATUS)

def signal_self(signum):
  os.kill(os.getpid(), signum)
  time.sleep(5)  # the handler runs at the next bytecode
'''


def _run(body: str, stop_status=None, before=''):
  code = _PROLOGUE.replace('STOP_STATUS',
                           repr(stop_status)).replace('BEFORE', before)
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return run_python(['-c', code + textwrap.dedent(body)], env, timeout=60)


def test_a_stop_while_starting_is_one_line_and_128_plus_the_signal():
  for signum, name in ((2, 'SIGINT'), (15, 'SIGTERM')):
    proc = _run(f'''
        signal_self({signum})
        print('went on')
        ''')
    assert proc.returncode == 128 + signum, proc.stderr
    assert proc.stderr == f'demo: stopped by {name} while starting; nothing done\n'
    assert proc.stdout == ''


def test_a_signal_the_command_was_started_with_ignored_stays_ignored():
  proc = _run(
      '''
      signal_self(signal.SIGINT)
      print('went on', flush=True)
      signal_self(signal.SIGTERM)
      ''',
      before='signal.signal(signal.SIGINT, signal.SIG_IGN)')
  assert proc.stdout == 'went on\n'
  assert proc.returncode == 143, proc.stderr
  assert proc.stderr == (
      'demo: stopped by SIGTERM while starting; nothing done\n')


def test_a_command_may_give_its_own_status_for_a_stop():
  proc = _run('signal_self(signal.SIGTERM)', stop_status=0)
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == (
      'demo: stopped by SIGTERM while starting; nothing done\n')


def test_a_stop_an_import_swallowed_ends_the_command_when_it_starts():
  # The signal lands in a destructor: Python swallows what it raises there
  # ("Exception ignored in ...") and the start-up goes on.
  proc = _run('''
      class Doomed:
        def __del__(self):
          signal_self(signal.SIGINT)
      Doomed()
      print('went on', flush=True)
      cli.started()
      print('ran the command')
      ''')
  assert proc.returncode == 130, proc.stderr
  assert proc.stdout == 'went on\n'
  assert proc.stderr == (
      'demo: stopped by SIGINT while starting; nothing done\n')


def test_a_stop_that_leaves_the_imports_stderr_filter_midway_still_prints():
  # A signal can land in the `with` statement's call of the filter's exit,
  # before the filter's own code puts descriptor 2 back.
  proc = _run('''
      from core import quiet
      holding = quiet.native_stderr_filtered()
      holding.__enter__()
      signal_self(signal.SIGTERM)
      ''')
  assert proc.returncode == 143, proc.stderr
  assert proc.stderr == (
      'demo: stopped by SIGTERM while starting; nothing done\n')


def test_a_stop_after_the_stderr_relay_started_is_written_before_the_exit(
    tmp_path):
  # Between its imports and its body a command passes its stderr through a
  # relay process (core/stderr_relay.py); the line must be written out when
  # the command has exited, not after (read from a file, which, unlike a
  # pipe, nobody waits on).
  code = _PROLOGUE.replace('STOP_STATUS', 'None').replace('BEFORE', '') + (
      textwrap.dedent('''
      from core import quiet
      quiet.filter_runtime_noise()
      signal_self(signal.SIGTERM)
      '''))
  stderr_path = tmp_path / 'stderr.txt'
  with open(stderr_path, 'w') as stderr:
    proc = subprocess.run([sys.executable, '-c', code],
                          cwd=str(ROOT),
                          env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          stdout=subprocess.DEVNULL,
                          stderr=stderr,
                          timeout=60,
                          check=False)
  assert proc.returncode == 143
  assert stderr_path.read_text() == (
      'demo: stopped by SIGTERM while starting; nothing done\n')


def test_once_started_the_command_handles_signals_as_before():
  proc = _run('''
      cli.started()
      try:
        signal_self(signal.SIGINT)
      except KeyboardInterrupt:
        print('KeyboardInterrupt', flush=True)
      signal.signal(signal.SIGTERM, signal.SIG_DFL)
      raise ValueError('a real error')
      ''')
  assert proc.stdout == 'KeyboardInterrupt\n'
  assert proc.returncode == 1
  assert 'ValueError: a real error' in proc.stderr
  assert 'while starting' not in proc.stderr


def test_other_errors_while_starting_still_print_their_traceback():
  proc = _run('''
      raise ValueError('a real error')
      ''')
  assert proc.returncode == 1
  assert 'Traceback' in proc.stderr and 'ValueError: a real error' in proc.stderr


# ------------------------------------------- a stop while the body runs (run)


def _run_body(body: str, before=''):
  """Runs `body` as a command's body (cli.run), its status the exit code."""
  return _run(
      'def body():\n' + textwrap.indent(textwrap.dedent(body), '  ') +
      '\nsys.exit(cli.run("demo", body))\n',
      before=before)


def test_a_stop_while_the_body_runs_unwinds_it_and_is_one_line():
  for signum, name in ((2, 'SIGINT'), (15, 'SIGTERM')):
    proc = _run_body(f'''
        try:
          signal_self({signum})
          print('went on')
        finally:
          print('cleaned up', flush=True)
        return 0
        ''')
    assert proc.returncode == 128 + signum, proc.stderr
    assert proc.stderr == f'demo: stopped by {name}\n'
    assert proc.stdout == 'cleaned up\n'


def test_an_error_the_stop_caused_is_reported_as_the_stop():
  # A library that turns whatever interrupts it into its own error (here,
  # one reported as the user's) does not hide why the command ended.
  proc = _run_body('''
      from core.errors import UserError
      try:
        signal_self(signal.SIGTERM)
      except BaseException as e:
        raise UserError('the input could not be read') from e
      ''')
  assert proc.returncode == 143, proc.stderr
  assert proc.stderr == 'demo: stopped by SIGTERM\n'


def test_a_library_logging_the_stop_with_its_traceback_is_not_printed():
  # As Beam logs what a DoFn raised before it raises it again.
  proc = _run_body('''
      import logging
      try:
        signal_self(signal.SIGTERM)
      except BaseException:
        logging.getLogger('library').exception('while running a step')
        raise
      ''')
  assert proc.returncode == 143, proc.stderr
  assert proc.stderr == 'demo: stopped by SIGTERM\n'


def test_a_swallowed_stop_is_raised_before_anything_is_published():
  proc = _run_body('''
      try:
        signal_self(signal.SIGINT)
      except KeyboardInterrupt:
        pass  # as a destructor or a callback would
      print('made', flush=True)
      cli.check_stop()
      print('published')
      return 0
      ''')
  assert proc.returncode == 130, proc.stderr
  assert proc.stderr == 'demo: stopped by SIGINT\n'
  assert proc.stdout == 'made\n'


def test_a_swallowed_stop_is_raised_again_until_it_unwinds_the_body():
  proc = _run_body('''
      swallowed = 0
      for _ in range(100):
        try:
          if not swallowed:
            signal_self(signal.SIGTERM)
          time.sleep(0.1)
        except KeyboardInterrupt:
          swallowed += 1
          if swallowed == 1:
            continue  # the first is swallowed
          raise
      print('ran to its end')
      return 0
      ''')
  assert proc.returncode == 143, proc.stderr
  assert proc.stderr == 'demo: stopped by SIGTERM\n'
  assert proc.stdout == ''


def test_the_repeated_stop_does_not_cut_the_clean_up_short():
  # The body's clean-up on its way out takes longer than the repeat's
  # period (0.5 s).
  proc = _run_body('''
      try:
        signal_self(signal.SIGINT)
      finally:
        time.sleep(1.2)
        print('cleaned up', flush=True)
      ''')
  assert proc.returncode == 130, proc.stderr
  assert proc.stderr == 'demo: stopped by SIGINT\n'
  assert proc.stdout == 'cleaned up\n'


def test_a_signal_the_command_was_started_with_ignored_stays_ignored_in_its_body(
):
  proc = _run_body(
      '''
      signal_self(signal.SIGINT)
      print('went on')
      return 0
      ''',
      before='signal.signal(signal.SIGINT, signal.SIG_IGN)')
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout == 'went on\n'
  assert proc.stderr == ''


def test_an_error_in_the_body_is_reported_as_before():
  proc = _run_body('''
      from core.errors import UserError
      raise UserError('--input x: no file matches')
      ''')
  assert proc.returncode == 2
  assert proc.stderr == 'demo: error: --input x: no file matches\n'


def test_a_finished_command_ends_as_python_would_without_its_teardown():
  # cli.finish: its threads are waited for and its exit handlers run, and
  # the exit status is the body's.
  proc = _run('''
      import atexit, threading
      atexit.register(lambda: print('exit handler ran', flush=True))

      def late():
        time.sleep(0.3)
        print('thread done', flush=True)

      def body():
        threading.Thread(target=late).start()
        print('body done')
        return 3

      cli.finish(cli.run('demo', body))
      ''')
  assert proc.returncode == 3, proc.stderr
  assert proc.stdout == 'body done\nthread done\nexit handler ran\n'
  assert proc.stderr == ''
