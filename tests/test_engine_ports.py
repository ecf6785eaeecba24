"""The local clusters' daemons listen on the ports their commands print.

scripts/engines/lib.sh picks a daemon's port, starts the daemon and waits for
it to listen. Flink's and Spark's processes bind ephemeral ports while they
start, so a port free when it was picked can be taken before the daemon binds
it; a daemon that then fails to bind (or, with SO_REUSEPORT as gRPC servers
set it, shares the port) must not be mistaken for one that listens, or a job
is sent to whatever holds the port. Here the daemon is a small listener and
the port is held by this test, with no cluster.
"""

import os
import pathlib
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

LIB = ROOT / 'scripts' / 'engines' / 'lib.sh'
# A daemon that listens on argv[1] as gRPC servers do (SO_REUSEPORT), and
# exits if it cannot bind.
LISTENER = ('import socket, sys, time\n'
            's = socket.socket()\n'
            's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)\n'
            's.bind(("0.0.0.0", int(sys.argv[1])))\n'
            's.listen()\n'
            'time.sleep(300)\n')


def _bash(script: str, state: pathlib.Path) -> subprocess.CompletedProcess:
  """Runs `script` after sourcing lib.sh, with its state in `state`."""
  env = dict(
      os.environ,
      ENGINES_CACHE=str(state / 'cache'),
      ENGINE_STATE_DIR=str(state),
      ENGINE_PYTHON=sys.executable)
  prelude = (f'set -euo pipefail\nSCRIPT=test\nsource {LIB}\n'
             'engines_init test\n'
             "trap 'stop_daemon listener >/dev/null 2>&1' EXIT\n")
  return subprocess.run(['bash', '-c', prelude + script],
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=120,
                        check=False)


def _holder(reuseport: bool) -> socket.socket:
  s = socket.socket()
  if reuseport:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
  s.bind(('0.0.0.0', 0))
  s.listen()
  return s


@pytest.fixture(autouse=True)
def _no_listener_left(tmp_path):
  yield
  pidfile = tmp_path / 'listener.pid'
  if pidfile.exists():
    pid = int(pidfile.read_text().split()[0])
    try:
      os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
      pass


@pytest.mark.parametrize(
    'reuseport', [False, True], ids=['bind fails', 'port shared'])
def test_a_port_held_by_another_process_is_not_the_daemon(tmp_path, reuseport):
  with _holder(reuseport) as held:
    port = held.getsockname()[1]
    proc = _bash(
        f'start_daemon listener "$LOGS/listener.log" "$STATE" '
        f'"$PY" -c {shlex.quote(LISTENER)} {port}\n'
        f'if wait_for_port {port} listener "$STATE/listener.pid" '
        f'"$LOGS/listener.log" 30; then echo LISTENS; else echo TAKEN; fi\n'
        'daemon_alive "$STATE/listener.pid" && echo ALIVE || echo STOPPED\n',
        tmp_path)
  assert proc.returncode == 0, proc.stderr
  # Either way the daemon does not serve the port alone, and is not left
  # running on it.
  assert proc.stdout.split() == ['TAKEN', 'STOPPED'], proc.stderr


@pytest.mark.parametrize(
    'reuseport', [False, True], ids=['bind fails', 'port shared'])
def test_a_port_taken_before_the_daemon_binds_it_is_replaced(
    tmp_path, reuseport):
  with _holder(reuseport) as held:
    port = held.getsockname()[1]
    # The race: the port looks free when it is picked, and is not when the
    # daemon binds it (lib.sh's own check sees it taken from then on).
    proc = _bash(
        'eval "real_$(declare -f port_in_use)"\n'
        'checked=0\n'
        'port_in_use() { checked=$((checked + 1)); ((checked > 1)) && '
        'real_port_in_use "$1"; }\n'
        f'listen_on listener Listener TEST_PORT {port} "$STATE" '
        f'"$PY" -c {shlex.quote(LISTENER)} @PORT@\n'
        'echo "PORT=$TEST_PORT"\n'
        'port_holder "$TEST_PORT" "$STATE/listener.pid" && echo OWNED\n'
        'cat "$STATE/cluster.env"\n', tmp_path)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  new_port = int(lines[0].split('=')[1])
  assert new_port != port
  assert lines[1] == 'OWNED'
  assert f'TEST_PORT={new_port}' in lines
  assert (f"PORT_NOTE_TEXT='port {port} (Listener) is taken, using "
          f"{new_port}'") in lines
  assert (f'port {port} (Listener) was taken by another process while '
          'Listener started (try 1 of 3)') in proc.stderr


def test_a_free_port_is_kept(tmp_path):
  with socket.socket() as s:
    s.bind(('0.0.0.0', 0))
    port = s.getsockname()[1]
  proc = _bash(
      f'listen_on listener Listener TEST_PORT {port} "$STATE" '
      f'"$PY" -c {shlex.quote(LISTENER)} @PORT@\n'
      'echo "PORT=$TEST_PORT"\n', tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == [f'PORT={port}']
  assert 'taken' not in proc.stderr


def test_a_killed_daemon_not_yet_reaped_is_not_alive(tmp_path):
  # A daemon killed a moment ago stays a zombie until its parent reaps it;
  # `up` must restart it, not wait on it as if it were starting.
  proc = subprocess.Popen(['sleep', '60'])
  try:
    stat = pathlib.Path(f'/proc/{proc.pid}/stat').read_text()
    started = stat.rsplit(') ', 1)[1].split()[19]
    (tmp_path / 'sleeper.pid').write_text(f'{proc.pid} {started}\n')
    check = 'daemon_alive "$STATE/sleeper.pid" && echo ALIVE || echo STOPPED\n'
    alive = _bash(check, tmp_path)
    proc.kill()
    while pathlib.Path(f'/proc/{proc.pid}/stat').read_text().rsplit(
        ') ', 1)[1].split()[0] != 'Z':
      time.sleep(0.01)  # dying
    killed = _bash(check, tmp_path)
  finally:
    proc.kill()
    proc.wait()
  assert alive.stdout.split() == ['ALIVE'], alive.stderr
  assert killed.stdout.split() == ['STOPPED'], killed.stderr


def test_a_failed_up_stops_what_it_started_and_nothing_else(tmp_path):
  # A cluster already up, one of whose daemons `up` starts again: if that
  # fails, the daemons that were running (a master a job may be using) stay.
  start = ('start_daemon {name} "$LOGS/{name}.log" "$STATE" '
           f'{shlex.quote(sys.executable)} -c "import time; time.sleep(300)"\n')
  alive = 'daemon_alive "$STATE/{name}.pid" && echo {name} ALIVE\n'
  try:
    before = _bash(start.format(name='master'), tmp_path)
    assert before.returncode == 0, before.stderr
    failed = _bash(
        'trap stop_after_failed_up EXIT\n' + start.format(name='worker') +
        start.format(name='job-server') + 'die "the worker exited"\n', tmp_path)
    after = _bash(
        ''.join(
            alive.format(name=n) for n in ('master', 'worker', 'job-server')),
        tmp_path)
    done = _bash(
        'UP_DONE=1\ntrap stop_after_failed_up EXIT\n' +
        start.format(name='worker'), tmp_path)
    kept = _bash(alive.format(name='worker'), tmp_path)
  finally:
    for name in ('master', 'worker', 'job-server'):
      pidfile = tmp_path / f'{name}.pid'
      if pidfile.exists():
        try:
          os.killpg(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        except ProcessLookupError:
          pass
  assert failed.returncode == 2
  assert ('start-up failed; stopping what this up started (worker '
          'job-server)') in failed.stderr
  assert 'stopped job-server' in failed.stderr.split('stopped worker')[0]
  assert after.stdout.split() == ['master', 'ALIVE'], after.stderr
  assert done.returncode == 0 and 'start-up failed' not in done.stderr
  assert kept.stdout.split() == ['worker', 'ALIVE'], kept.stderr
