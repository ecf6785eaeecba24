"""A local Flink or Spark cluster from Python, for the tests and benchmarks.

Wraps scripts/engines/{flink,spark}.sh: `up` in a folder of its own (its
configuration, PID files and logs), on free ports, and `down` by the PIDs the
script recorded, so a test or benchmark never touches a cluster a user
started with `make flink-up` and always stops its own.
"""

import os
import pathlib
import shutil
import socket
import subprocess
from typing import Dict, Optional

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
ENGINES = ROOT / 'scripts' / 'engines'
# Exit status of flink.sh / spark.sh when this machine lacks a prerequisite
# (Java, Maven, a download) rather than the cluster failing to start.
MISSING_PREREQUISITE = 3
UP_TIMEOUT_S = 900  # the first `up` downloads about 600 MB


class ClusterError(RuntimeError):
  """`up` failed; `missing` tells a missing prerequisite from a failure."""

  def __init__(self, message: str, missing: bool):
    super().__init__(message)
    self.missing = missing


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('', 0))
    return s.getsockname()[1]


def _port_vars(engine: str) -> Dict[str, str]:
  names = {
      'flink': ['FLINK_REST_PORT', 'FLINK_RPC_PORT'],
      'spark': [
          'SPARK_MASTER_PORT', 'SPARK_MASTER_WEBUI_PORT',
          'SPARK_WORKER_WEBUI_PORT'
      ]
  }[engine]
  return {
      name: str(_free_port())
      for name in names + ['JOB_SERVER_PORT', 'WORKER_POOL_PORT']
  }


class Cluster:
  """One local cluster of `engine` ('flink' or 'spark') in `state_dir`."""

  def __init__(self,
               engine: str,
               state_dir: pathlib.Path,
               extra_env: Optional[Dict[str, str]] = None):
    self.engine = engine
    self.state_dir = pathlib.Path(state_dir)
    self.script = ENGINES / f'{engine}.sh'
    self._env = dict(os.environ)
    self._env.pop('PYTHONPATH', None)
    self._env['ENGINE_STATE_DIR'] = str(self.state_dir)
    self._env.update(_port_vars(engine))
    self._env.update(extra_env or {})
    self.up_output = ''

  def _run(self, command: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(self.script), command],
                          cwd=str(ROOT),
                          env=self._env,
                          capture_output=True,
                          text=True,
                          timeout=timeout,
                          check=False)

  def up(self) -> 'Cluster':
    proc = self._run('up', UP_TIMEOUT_S)
    self.up_output = proc.stdout + proc.stderr
    if proc.returncode != 0:
      raise ClusterError(
          f'{self.script.name} up failed ({proc.returncode}):\n'
          f'{self.up_output[-4000:]}',
          missing=proc.returncode == MISSING_PREREQUISITE)
    return self

  def down(self) -> str:
    proc = self._run('down', 180)
    return proc.stdout + proc.stderr

  @property
  def settings(self) -> Dict[str, str]:
    out = {}
    path = self.state_dir / 'cluster.env'
    for line in path.read_text(encoding='utf-8').splitlines():
      key, _, value = line.partition('=')
      out[key] = value.strip("'")
    return out

  @property
  def job_endpoint(self) -> str:
    return f'localhost:{self.settings["JOB_SERVER_PORT"]}'

  @property
  def worker_pool(self) -> str:
    return f'localhost:{self.settings["WORKER_POOL_PORT"]}'

  def pid(self, name: str) -> int:
    """PID of a process `up` started (e.g. 'taskmanager-1', 'worker')."""
    text = (self.state_dir / f'{name}.pid').read_text(encoding='utf-8')
    return int(text.split()[0])

  def log(self, name: str) -> str:
    path = self.state_dir / 'log' / f'{name}.log'
    return path.read_text(encoding='utf-8', errors='replace') \
        if path.exists() else ''


def java_available() -> bool:
  return shutil.which('java') is not None
