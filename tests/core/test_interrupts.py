"""Ctrl-C and SIGTERM stop a job promptly, whatever the job does with them.

Each case runs in a process of its own: the signals are real, and a stop
that runs out of patience ends its process without unwinding.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures('sigint_from_a_terminal')

PRELUDE = '''
import os, pathlib, shutil, signal, sys, threading, time
from core.interrupts import Interrupted, StopOnSignals

work = pathlib.Path(sys.argv[1])
written = [0]

def abandon(name):
  # What a job's clean-up does: remove its output, then say so.
  shutil.rmtree(work / 'out', ignore_errors=True)
  seen = written[0]
  time.sleep(0.5)
  print(f'abandoned {name}; written after abandoning: {written[0] - seen}',
        flush=True)

def write_one():
  # A job that writes files, making its directory as it goes.
  (work / 'out' / 'part').mkdir(parents=True, exist_ok=True)
  (work / 'out' / 'part' / f'{written[0]}.txt').write_text('x')
  written[0] += 1

swallowed = [0]

def job(step, seconds, swallow):
  """Runs step() for `seconds`; swallows `swallow` raises, as libraries do.

  Says 'ready' once inside the try, where a signal may come. The try holds
  the whole loop, so a raise that lands on the loop's own test or jump is
  caught too (Python checks for signals on a loop's backward jump).
  """
  start, ready = time.monotonic(), [False]

  def steps():
    while time.monotonic() - start < seconds:
      if not ready[0]:
        ready[0] = True
        print('ready', flush=True)
      step()

  while True:
    try:
      steps()
      break
    except Interrupted:
      if swallowed[0] == swallow:
        raise
      swallowed[0] += 1
  print('ran to its end', flush=True)
'''


def _run(tmp_path, body: str, signals=(signal.SIGINT,), gap_s=0.0):
  """Runs PRELUDE + body, which prints 'ready' once the signals may come,
  and sends `signals` `gap_s` apart (one signal sent twice before the first
  is handled is delivered once)."""
  proc = subprocess.Popen([sys.executable, '-c', PRELUDE + body,
                           str(tmp_path)],
                          cwd=ROOT,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE,
                          text=True)
  try:
    assert proc.stdout.readline().strip() == 'ready', proc.stderr.read()
    for i, signum in enumerate(signals):
      if i:
        time.sleep(gap_s)
      proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  return proc.returncode, out, err


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_first_signal_raises_in_the_main_thread_and_is_remembered(
    tmp_path, signum):
  code, out, err = _run(
      tmp_path, '''
before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
with StopOnSignals(abandon) as stop:
  try:
    print('ready', flush=True)
    time.sleep(30)
  except Interrupted as e:
    print('raised', e.signal_name, e.exit_code)
  try:
    stop.check()
  except Interrupted as e:
    print('check raised', e.signal_name)
print('handlers restored:',
      [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == before)
''', [signum])
  name = signal.Signals(signum).name
  assert code == 0, err
  assert out.splitlines() == [
      f'raised {name} {128 + signum}', f'check raised {name}',
      'handlers restored: True'
  ]


def test_a_signal_the_process_was_started_with_ignored_stays_ignored(tmp_path):
  # SIGINT under `nohup cmd &`: the stop is SIGTERM's alone.
  code, out, err = _run(
      tmp_path, '''
signal.signal(signal.SIGINT, signal.SIG_IGN)
with StopOnSignals(abandon) as stop:
  try:
    print('ready', flush=True)
    time.sleep(1)
    print('SIGINT ignored', flush=True)
  except Interrupted as e:
    print('raised', e.signal_name)
print('still ignored:', signal.getsignal(signal.SIGINT) == signal.SIG_IGN)
''', [signal.SIGINT])
  assert code == 0, err
  assert out.splitlines() == ['SIGINT ignored', 'still ignored: True']
  assert err == ''


def test_a_swallowed_raise_is_raised_again_in_an_insistent_section(tmp_path):
  # Libraries print an exception raised in a destructor as "ignored" and go
  # on: the job must not run on to its end.
  code, out, err = _run(
      tmp_path, '''
with StopOnSignals(abandon, grace_s=60) as stop:
  start = time.monotonic()
  try:
    with stop.insistent():
      job(lambda: time.sleep(0.01), 40, swallow=1)
  except Interrupted:
    print('stopped after swallowing', swallowed[0], 'within',
          int(time.monotonic() - start) < 20)
''')
  assert code == 0, err
  assert out.splitlines() == ['stopped after swallowing 1 within True']


def test_the_raise_is_not_repeated_while_the_section_unwinds_from_it(tmp_path):
  # Clean-up in a `finally` block, and in what it calls, that outlasts the
  # repeat's period.
  code, out, err = _run(
      tmp_path, '''
def clean_up():
  time.sleep(1.2)
  print('cleaned up', flush=True)

with StopOnSignals(abandon, grace_s=60) as stop:
  try:
    with stop.insistent():
      try:
        print('ready', flush=True)
        time.sleep(30)
      finally:
        clean_up()
  except Interrupted as e:
    print('raised', e.signal_name)
''')
  assert code == 0, err
  assert out.splitlines() == ['cleaned up', 'raised SIGINT']


def test_outside_an_insistent_section_a_swallowed_raise_stays_swallowed(
    tmp_path):
  code, out, err = _run(
      tmp_path, '''
with StopOnSignals(abandon, grace_s=60) as stop:
  job(lambda: time.sleep(0.01), 3, swallow=float('inf'))
  print('swallowed', swallowed[0])
''')
  assert code == 0, err
  assert out.splitlines() == ['ran to its end', 'swallowed 1']


def test_a_job_that_ignores_the_stop_is_ended_after_the_grace_period(tmp_path):
  # The clean-up runs while the job's main thread still writes: the main
  # thread is parked first, so nothing brings the output back.
  code, out, err = _run(
      tmp_path, '''
with StopOnSignals(abandon, grace_s=1) as stop:
  job(write_one, 60, swallow=float('inf'))
''')
  assert code == 128 + signal.SIGINT, err
  assert out.splitlines() == ['abandoned SIGINT; written after abandoning: 0']
  assert not os.path.exists(tmp_path / 'out')


def test_a_second_signal_ends_the_job_at_once_and_abandons_once(tmp_path):
  code, out, err = _run(
      tmp_path, '''
with StopOnSignals(abandon, grace_s=60) as stop:
  job(write_one, 60, swallow=float('inf'))
''', [signal.SIGTERM, signal.SIGINT])
  # The second signal may land before the first is handled; either way the
  # process ends with the code of the one that ended it, and says so once.
  assert code in (128 + signal.SIGINT, 128 + signal.SIGTERM), err
  lines = out.splitlines()
  assert len(lines) == 1 and lines[0].startswith('abandoned SIG'), out
  assert not os.path.exists(tmp_path / 'out')


def test_a_second_signal_handled_before_the_first_call_starts_ends_the_job(
    tmp_path):
  # The second signal comes as Python calls the handler for the first, so
  # Python runs the handler for it at the first call's very start (the frame
  # it interrupts is that call's). Raising there unwound the first call
  # before it saw its signal: the second was lost, and the job ran on to
  # the end of its grace period (about 1 run in 15 of the test above).
  code, out, err = _run(
      tmp_path,
      """
import types
with StopOnSignals(abandon, grace_s=60) as stop:
  print('ready', flush=True)
  first_call = types.SimpleNamespace(f_code=StopOnSignals._handle.__code__)
  stop._handle(signal.SIGINT, first_call)
  print('not raised', flush=True)
  stop._handle(signal.SIGTERM, None)  # the first call, resumed
  print('not ended', flush=True)
""",
      signals=())
  assert code == 128 + signal.SIGTERM, err
  assert out.splitlines() == [
      'not raised', 'abandoned SIGTERM; written after abandoning: 0'
  ], err


def test_more_signals_during_a_long_clean_up_do_not_cut_it_short(tmp_path):
  # Ctrl-C three times while a job whose libraries swallow the raise runs
  # in an insistent section, with a clean-up longer than the repeat's
  # period (a cancel that waits for a cluster). The repeat raised inside the
  # clean-up, which ended the process without its last line; the third
  # Ctrl-C parked the thread that was cleaning up.
  code, out, err = _run(
      tmp_path,
      """
def abandon(name):
  shutil.rmtree(work / 'out', ignore_errors=True)
  print('cleaning up', flush=True)
  time.sleep(1.5)
  print(f'abandoned {name}', flush=True)

with StopOnSignals(abandon, grace_s=60) as stop:
  with stop.insistent():
    job(write_one, 60, swallow=float('inf'))
""", [signal.SIGINT, signal.SIGINT, signal.SIGINT],
      gap_s=0.3)
  assert code == 128 + signal.SIGINT, err
  assert out.splitlines() == ['cleaning up', 'abandoned SIGINT'], err
  assert not os.path.exists(tmp_path / 'out')


def test_a_signal_in_a_deferred_section_waits_for_its_end(tmp_path):
  code, out, err = _run(
      tmp_path, '''
with StopOnSignals(abandon, grace_s=0.2) as stop:
  with stop.deferred():
    print('ready', flush=True)
    time.sleep(1.5)  # longer than the grace period: still not cut
    print('deferred section done', flush=True)
  try:
    stop.check()
  except Interrupted as e:
    print('then stopped by', e.signal_name)
''')
  assert code == 0, err
  assert out.splitlines() == ['deferred section done', 'then stopped by SIGINT']


def test_the_stop_is_not_reported_again_on_its_way_out(tmp_path):
  # Beam logs the exception a DoFn raised, and Python prints a raise that a
  # destructor swallowed: not for the Interrupted, which the command reports
  # in one line; anything else still prints.
  code, out, err = _run(
      tmp_path, '''
import logging
logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')

class Swallower:
  def __del__(self):
    print('ready', flush=True)
    try:
      time.sleep(30)  # the signal lands here
    except Interrupted as e:
      # As a C extension reports a callback's raise, which is then
      # swallowed, printed as unraisable.
      raise SystemError('returned a result with an exception set') from e

class Faulty:
  def __del__(self):
    raise ValueError('a destructor of the job failed')

hook = sys.unraisablehook
with StopOnSignals(abandon, grace_s=60) as stop:
  try:
    with stop.insistent():
      s = Swallower()
      del s
      try:
        time.sleep(30)  # raised again here
      except Interrupted as e:
        logging.getLogger('apache_beam.runners.common').exception(e)
        logging.getLogger('job').error('an error of the job',
                                       exc_info=ValueError('real'))
        f = Faulty()
        del f
        raise
  except Interrupted:
    print('stopped', flush=True)
print('restored', sys.unraisablehook is hook,
      [h.filters for h in logging.getLogger().handlers])
logging.getLogger('apache_beam.runners.common').error(
    'after the stop', exc_info=Interrupted(signal.SIGINT))
''')
  assert code == 0, err
  assert out.splitlines() == ['stopped', 'restored True [[]]']
  before = err.split('ERROR after the stop')[0]
  assert 'Interrupted' not in before and 'SystemError' not in before, err
  assert 'ERROR an error of the job' in err and 'ValueError: real' in err
  assert 'Exception ignored in' in err
  assert 'ValueError: a destructor of the job failed' in err


def test_the_stop_in_a_dofns_teardown_is_not_reported(tmp_path):
  # Beam re-raises what a DoFn's teardown raised with the step's name added:
  # a RuntimeError naming the Interrupted, which it does not chain as the
  # cause, and logs it when it closes the workers. A stopped command printed
  # that record's traceback after its one line.
  code, out, err = _run(
      tmp_path, """
import logging
logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
import apache_beam as beam

class SlowTeardown(beam.DoFn):
  def process(self, x):
    yield x

  def teardown(self):
    print('ready', flush=True)
    time.sleep(30)  # the signal lands here

with StopOnSignals(abandon, grace_s=60) as stop:
  try:
    with stop.insistent():
      with beam.Pipeline() as p:
        _ = p | beam.Create([1]) | beam.ParDo(SlowTeardown())
      stop.check()
  except Interrupted as e:
    print('stopped by', e.signal_name, flush=True)
""", [signal.SIGTERM])
  assert code == 0, err
  assert out.splitlines() == ['stopped by SIGTERM'], err
  assert 'Interrupted' not in err and 'Traceback' not in err, err


def test_an_error_the_stop_replaced_in_tensorflow_is_not_reported(tmp_path):
  # The signal lands while TensorFlow's bindings (pybind11) build the
  # Python exception of a C++ error: pybind11 raises a RuntimeError naming
  # the Interrupted that replaced it, without chaining it. Beam logs it, and
  # a C extension may report an error it caused as unraisable: neither is
  # printed; a real error still is.
  code, out, err = _run(
      tmp_path, '''
import logging
logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
import tensorflow as tf
from tensorflow.python.framework import errors_impl

graph = tf.Graph()
with graph.as_default():
  const = tf.constant(1)

def slow_init(self, *args, **kwargs):
  print('ready', flush=True)
  time.sleep(30)  # the signal lands while the error is built

errors_impl.InvalidArgumentError.__init__ = slow_init

class Reporter:
  def __init__(self, e):
    self.e = e
  def __del__(self):
    raise SystemError('returned a result with an exception set') from self.e

with StopOnSignals(abandon, grace_s=60) as stop:
  try:
    const.op.get_attr('_no_such_attr')
  except RuntimeError as e:
    print('replaced', 'MISMATCH' in str(e), flush=True)
    logging.getLogger('apache_beam.runners.common').error(
        '%s [while running a step]', e, exc_info=e)
    reporter = Reporter(e)
    del reporter
    logging.getLogger('job').error('a real error', exc_info=RuntimeError('real'))
print('stopped', stop.signum == signal.SIGTERM)
''', [signal.SIGTERM])
  assert code == 0, err
  assert out.splitlines() == ['replaced True', 'stopped True']
  assert 'MISMATCH' not in err and 'SystemError' not in err, err
  assert 'ERROR a real error' in err and 'RuntimeError: real' in err, err


def test_an_unnoticed_pending_error_is_not_reported_once_stopped(tmp_path):
  # TensorFlow's type checks (nest.flatten) report an exception that C code
  # left pending as unraisable: Python's SystemError "<built-in function
  # __import__> returned a result with an exception set". Once a stop has
  # been asked for, that is the stop's doing whatever the pending exception
  # was; before it, it is printed.
  code, out, err = _run(
      tmp_path, '''
class Reporter:
  def __init__(self, when):
    self.when = when
  def __del__(self):
    raise SystemError(
        f'<built-in function __import__> returned a result with an '
        f'exception set ({self.when})') from RuntimeError('left pending')

with StopOnSignals(abandon, grace_s=60) as stop:
  reporter = Reporter('before the stop')
  del reporter
  try:
    print('ready', flush=True)
    time.sleep(30)  # the signal lands here
  except Interrupted:
    reporter = Reporter('after the stop')
    del reporter
    print('stopped', flush=True)
''')
  assert code == 0, err
  assert out.splitlines() == ['stopped']
  assert 'exception set (before the stop)' in err, err
  assert 'after the stop' not in err, err


def test_a_handler_a_library_put_in_its_place_is_reclaimed(tmp_path):
  # Beam's FlinkRunner and SparkRunner start their job server in run(),
  # through StopOnExitJobServer, which points SIGINT at the server's stop():
  # Python calls it with (signum, frame), which stop() does not take, so
  # Ctrl-C raised a TypeError. Here the real wrapper, around Beam's
  # in-process job server.
  code, out, err = _run(
      tmp_path, '''
import tempfile
from apache_beam.runners.portability import job_server

tempfile.tempdir = str(work)  # the in-process job server's staging folder
with StopOnSignals(abandon, grace_s=60) as stop:
  server = job_server.StopOnExitJobServer(job_server.EmbeddedJobServer())
  server.start()
  replaced = signal.getsignal(signal.SIGINT) == server.stop
  reclaimed = [signal.Signals(s).name for s in stop.reclaim()], stop.reclaim()
  try:
    print('ready', flush=True)
    time.sleep(30)  # the signal lands here
  except Interrupted as e:
    print('replaced', replaced, 'reclaimed', reclaimed, 'stopped',
          e.signal_name, flush=True)
''')
  assert code == 0, err
  assert out.splitlines() == [
      "replaced True reclaimed (['SIGINT'], []) stopped SIGINT"
  ], err
