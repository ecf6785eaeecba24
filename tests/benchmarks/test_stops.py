"""What benchmarks.stops counts as a clean stop: what the preprocess's signal
test asserts, for any one of many stops."""

import signal

from benchmarks import stops

OUT = '/work/out'
STOPPED = 'preprocess: stopped by SIGTERM; nothing published to /work/out'


def test_the_one_line_and_the_exit_code_are_a_clean_stop():
  assert stops.verdict(signal.SIGTERM, 143, STOPPED + '\n', OUT, []) == []
  # A warning printed before the stop is not a problem.
  assert stops.verdict(signal.SIGTERM, 143,
                       'WARNING no curated schema\n' + STOPPED, OUT, []) == []
  # Stopped while it imported its libraries, before the job was built.
  starting = 'preprocess: stopped by SIGTERM while starting; nothing done\n'
  assert stops.verdict(signal.SIGTERM, 143, starting, OUT, []) == []
  assert stops.verdict(signal.SIGINT, 130, starting, OUT,
                       []) == ['last line: ' + starting.strip()]


def test_each_way_a_stop_can_go_wrong_is_named():
  assert stops.verdict(signal.SIGTERM, 0, STOPPED, OUT,
                       []) == ['exit 0, not 143']
  assert stops.verdict(signal.SIGINT, 130, STOPPED, OUT,
                       []) == ['last line: ' + STOPPED]
  assert stops.verdict(signal.SIGTERM, 143, '', OUT,
                       []) == ['last line: (none)']
  noisy = ('Traceback (most recent call last):\n  File "x.py", line 1\n'
           'SystemError: returned a result with an exception set\n' + STOPPED)
  assert stops.verdict(signal.SIGTERM, 143, noisy, OUT,
                       []) == ['a traceback on stderr']
  logged = 'ERROR pybind11::error_already_set: MISMATCH\n' + STOPPED
  assert stops.verdict(signal.SIGTERM, 143, logged, OUT,
                       []) == ['an ERROR record on stderr']
  assert stops.verdict(
      signal.SIGTERM, 143, STOPPED, OUT,
      ['/work/out.tmp', '/tmp/a']) == ['left behind: /tmp/a, /work/out.tmp']
