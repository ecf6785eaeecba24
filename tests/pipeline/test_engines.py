"""The preprocess job on real local Apache Flink and Apache Spark clusters.

Each engine's cluster is started by scripts/engines/{flink,spark}.sh (the
code behind `make flink-up` / `make spark-up`) in a folder of its own and on
free ports, once for the tests of that engine, and stopped by the PIDs it
recorded when they end, passed or failed. The job is submitted with
scripts/submit_{flink,spark}.sh, as a user submits it, from a folder outside
the repository and without PYTHONPATH; the SDK workers run in Beam's
EXTERNAL worker pool with an interpreter that holds the pinned stack but not
the project, so the project's code reaches them only as the setup.py sdist
the runner ships.

The outputs must equal the in-process DirectRunner's the way
tests/pipeline/test_runners.py compares runners (data files byte for byte, the
quarantine, the manifest counts, the vocabularies and transform variables)
on the same 10,000-row sample with bad rows among them. A fault test kills
the TaskManager with SIGKILL in the middle of a job: the command must fail
with a message saying so, and publish nothing.

Without Java or the downloads (Flink, Spark, Beam's job servers: about
600 MB, cached in .cache/engines) the tests are skipped, except under
CI=true, where they fail.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from scripts.engines import cluster as engines
from tests.conftest import ROOT
from tests.conftest import TOY_CONFIG
from tests.pipeline.runner_outputs import assert_same_outputs

pytestmark = pytest.mark.long

JOB_TIMEOUT_S = 900
IN_CI = os.environ.get('CI', '').lower() == 'true'


def _start(engine, tmp_path_factory, extra_env=None):
  if not engines.java_available():
    message = (f'{engine}: Java is not installed (apt-get install '
               'openjdk-17-jdk-headless maven)')
    if IN_CI:
      pytest.fail(message)
    pytest.skip(message)
  cluster = engines.Cluster(engine, tmp_path_factory.mktemp(engine), extra_env)
  try:
    cluster.up()
  except engines.ClusterError as e:
    cluster.down()
    if e.missing and not IN_CI:
      pytest.skip(f'{engine}: a prerequisite is missing: {e}')
    pytest.fail(str(e))
  return cluster


@pytest.fixture(scope='class')
def flink(tmp_path_factory):
  cluster = _start('flink', tmp_path_factory)
  try:
    yield cluster
  finally:
    print(cluster.down())


@pytest.fixture(scope='class')
def spark(tmp_path_factory):
  """Started while something else holds the job server's port, which it
  must replace by a free one and say so."""
  with socket.socket() as holder:
    holder.bind(('127.0.0.1', 0))
    holder.listen()
    taken = holder.getsockname()[1]
    cluster = _start('spark', tmp_path_factory, {'JOB_SERVER_PORT': str(taken)})
  cluster.taken_port = taken
  try:
    yield cluster
  finally:
    print(cluster.down())


def _submit_command(script, cluster, sample, out, *flags):
  return [
      str(ROOT / 'scripts' / script), '--job-endpoint', cluster.job_endpoint,
      '--environment-type', 'EXTERNAL', '--environment-config',
      cluster.worker_pool, *flags, '--config', TOY_CONFIG, '--input',
      sample['input'], '--test-input', sample['test_input'], '--output-dir', out
  ]


def _user_env():
  """The caller's environment, minus anything that could show the workers
  the project's source."""
  env = dict(os.environ)
  env.pop('PYTHONPATH', None)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  env.setdefault('PYTHONWARNINGS', 'ignore')
  return env


def _submit(command, cwd):
  start = time.monotonic()
  proc = subprocess.run(
      command,
      cwd=str(cwd),
      env=_user_env(),
      capture_output=True,
      text=True,
      timeout=JOB_TIMEOUT_S,
      check=False)
  print(f'{pathlib.Path(command[0]).name}: {time.monotonic() - start:.1f}s')
  assert proc.returncode == 0, (
      f'{" ".join(command)} failed ({proc.returncode}):\n'
      f'{proc.stderr[-6000:]}')
  # The sdist of --setup_file is built with the `build` the project
  # installs, not after Beam's failed try of a missing one.
  assert 'No module named' not in proc.stderr, proc.stderr[-6000:]
  return proc


def _manifest(out):
  with open(os.path.join(out, 'manifest.json'), encoding='utf-8') as f:
    return json.load(f)


def _assert_project_was_shipped(cluster):
  """The SDK workers got the project from the runner's staged artifacts."""
  pool_log = cluster.log('worker-pool')
  assert "installing ['workflow.tar.gz']" in pool_log, pool_log[-3000:]
  worker_python = (
      engines.ROOT / '.cache' / 'engines' / 'sdk-worker-env' / 'bin' / 'python')
  if os.environ.get('ENGINES_CACHE'):
    worker_python = (
        pathlib.Path(os.environ['ENGINES_CACHE']) / 'sdk-worker-env' / 'bin' /
        'python')
  # The workers' interpreter has the pinned stack but not the project.
  probe = subprocess.run([
      str(worker_python), '-c', 'import apache_beam, tensorflow_transform\n'
      'try:\n  import pipeline\nexcept ImportError:\n  print("absent")\n'
      'else:\n  print(pipeline.__file__)'
  ],
                         cwd=str(cluster.state_dir),
                         env=_user_env(),
                         capture_output=True,
                         text=True,
                         timeout=120,
                         check=False)
  assert probe.stdout.strip() == 'absent', (probe.stdout, probe.stderr[-2000:])


def _assert_job_server_logged(cluster):
  """The job server's log holds its steps (it ships without a logging
  backend), and not Beam's megabytes of end-of-job metrics."""
  server_log = cluster.log('job-server')
  assert 'Starting job invocation' in server_log, server_log[-3000:]
  assert '__metricscontainers' not in server_log


def _flink_jobs(flink):
  rest = f'http://localhost:{flink.settings["FLINK_REST_PORT"]}'
  with urllib.request.urlopen(f'{rest}/jobs/overview', timeout=10) as r:
    return json.load(r)['jobs']


def _running_job(flink, proc, finished_tasks):
  """The id of the job `proc` submitted, once the cluster has finished
  `finished_tasks` of its tasks (mid-job)."""
  deadline = time.monotonic() + 600
  while time.monotonic() < deadline and proc.poll() is None:
    running = [j for j in _flink_jobs(flink) if j['state'] == 'RUNNING']
    if running and running[0]['tasks']['finished'] >= finished_tasks:
      return running[0]['jid']
    time.sleep(0.5)
  raise AssertionError('the job ended before it was mid-job: ' +
                       (proc.stderr.read()[-3000:] if proc.poll(
                       ) is not None else 'still submitting'))


def _mid_job(command, cwd, wait, act, timeout_s):
  """Submits `command`, calls `act(proc)` once `wait(proc)` has returned
  (mid-job); returns the exit status, the stderr and what `wait` returned.
  """
  proc = subprocess.Popen(
      command,
      cwd=str(cwd),
      env=_user_env(),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True)
  try:
    job = wait(proc)
    act(proc)
    _, stderr = proc.communicate(timeout=timeout_s)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.communicate()
  return proc.returncode, stderr, job


def _ctrl_c_mid_job(flink, sample, tmp_path, act, command=None):
  """Submits a job to Flink with the cluster's REST address (as `make
  flink-up` prints the command, unless `command` is given), calls
  `act(proc)` once 10 of its tasks have finished, and checks the command
  ended as a Ctrl-C stop does; returns (stderr, the Flink job's id)."""
  out = tmp_path / 'stopped'
  command = command or _submit_command(
      'submit_flink.sh', flink, sample, str(out), '--parallelism', '2',
      '--flink-master', f'localhost:{flink.settings["FLINK_REST_PORT"]}')
  code, stderr, job = _mid_job(
      command,
      tmp_path,
      wait=lambda proc: _running_job(flink, proc, finished_tasks=10),
      act=act,
      timeout_s=120)
  assert code == 128 + signal.SIGINT, stderr[-4000:]
  lines = stderr.strip().splitlines()
  assert lines[-1] == (
      f'preprocess: stopped by SIGINT; nothing published to {out}'), (
          stderr[-4000:])
  assert not [line for line in lines if 'Traceback' in line], stderr[-4000:]
  return stderr, job


def _assert_nothing_came_back(tmp_path):
  """Nothing named like the output 3 s after the stop removed its staging
  directory: a job still running would write into it again."""
  time.sleep(3)
  assert not [
      p.name for p in tmp_path.iterdir() if p.name.startswith('stopped')
  ]


def _job_state(flink, jid):
  return {j['jid']: j['state'] for j in _flink_jobs(flink)}[jid]


def _flink_job_server_jar(directory):
  """A jar that runs the job server `make flink-up` runs (Beam's
  FlinkJobServerDriver on the classpath it resolved), for FlinkRunner's
  `--flink_job_server_jar`: the jar FlinkRunner fetches itself from Maven
  Central is not on the registries this machine reaches."""
  [lib] = (ROOT / '.cache' / 'engines' /
           'dist').glob('beam-flink-job-server-*-flink-*[0-9]')
  class_path = ' '.join(p.as_uri() for p in sorted(lib.glob('*.jar')))
  text = ('Manifest-Version: 1.0\n'
          'Main-Class: org.apache.beam.runners.flink.FlinkJobServerDriver\n'
          f'Class-Path: {class_path}')
  # A manifest's lines hold at most 72 bytes; a longer one goes on in lines
  # that start with a space.
  lines = []
  for line in text.splitlines():
    lines.append(line[:72])
    lines += [' ' + line[i:i + 71] for i in range(72, len(line), 71)]
  manifest = directory / 'manifest.txt'
  manifest.write_text('\n'.join(lines) + '\n')
  jar = directory / 'flink-job-server.jar'
  subprocess.run(['jar', 'cfm', str(jar), str(manifest)], check=True)
  return jar


def _java_commands():
  return subprocess.run(['ps', '-eo', 'args'],
                        capture_output=True,
                        text=True,
                        check=True).stdout.splitlines()


class TestFlink:
  """Flink 1.19 standalone: JobManager, TaskManager, Beam's job server."""

  def test_parallelism_two_through_worker_pool_matches_in_process(
      self, flink, sample, reference, tmp_path):
    out = str(tmp_path / 'flink')
    proc = _submit(
        _submit_command('submit_flink.sh', flink, sample, out, '--parallelism',
                        '2', '--progress-seconds', '2'),
        cwd=tmp_path)
    # The progress lines tell the job's staging from its run.
    phases = [
        line.split(', ', 1)[1].split(' (')[0]
        for line in proc.stdout.splitlines()
        if line.startswith('preprocess: ') and ' s, ' in line
    ]
    assert 'submitting the job' in phases, proc.stdout[-3000:]
    assert 'running the job' in phases[phases.index('submitting the job'):]
    manifest = _manifest(out)
    options = manifest['pipeline_options']
    assert options['job_endpoint'] == flink.job_endpoint
    assert options['environment_type'] == 'EXTERNAL'
    assert options['parallelism'] == 2
    assert_same_outputs(reference, out, manifest)
    _assert_project_was_shipped(flink)
    _assert_job_server_logged(flink)
    # `up` printed the command that targets this cluster.
    assert (f'--job-endpoint {flink.job_endpoint}' in flink.up_output and
            f'--environment-config {flink.worker_pool}' in flink.up_output)
    # The job ran on the cluster: its JobManager lists it as finished.
    with urllib.request.urlopen(
        f'http://localhost:{flink.settings["FLINK_REST_PORT"]}/jobs/overview',
        timeout=10) as r:
      jobs = json.load(r)['jobs']
    assert [j['state'] for j in jobs] == ['FINISHED']

  def test_cluster_waits_for_a_busy_taskmanager(self, flink):
    """Beam deploys over a hundred tasks at once when a stage ends, and the
    TaskManager takes them (and answers heartbeats) one at a time: on a
    loaded machine the last waited past Flink's default 10 s ask timeout and
    the job failed. The running JobManager has the longer limits."""
    with urllib.request.urlopen(
        f'http://localhost:{flink.settings["FLINK_REST_PORT"]}'
        '/jobmanager/config',
        timeout=10) as r:
      config = {e['key']: e['value'] for e in json.load(r)}
    assert config.get('pekko.ask.timeout') == os.environ.get(
        'FLINK_ASK_TIMEOUT', '120 s')
    assert config.get('heartbeat.timeout') == '60000'

  @pytest.mark.usefixtures('sigint_from_a_terminal')
  def test_ctrl_c_cancels_the_job_on_the_cluster(self, flink, sample, tmp_path):
    """A stopped submission cancels its job: left running, the job went on
    writing into the staging directory the stop had removed."""
    stderr, job = _ctrl_c_mid_job(
        flink,
        sample,
        tmp_path,
        act=lambda proc: proc.send_signal(signal.SIGINT))
    assert 'may still' not in stderr, stderr[-4000:]
    # Flink had cancelled the job by the time the command ended: the job
    # server's own cancel left it RUNNING.
    assert _job_state(flink, job) == 'CANCELED'
    assert [j['name'] for j in _flink_jobs(flink) if j['jid'] == job
           ][0].startswith('preprocess-')
    _assert_nothing_came_back(tmp_path)

  def test_a_job_cancelled_on_the_cluster_ends_the_command_in_one_line(
      self, flink, sample, tmp_path):
    """Cancelled from Flink's web UI or `flink cancel`: not Beam's
    RuntimeError with Flink's JobCancellationException and a traceback,
    but one line that says so, exit 3, and nothing published."""
    rest = f'http://localhost:{flink.settings["FLINK_REST_PORT"]}'
    out = tmp_path / 'stopped'

    job = []  # its Flink id, once it runs

    def running(proc):
      job.append(_running_job(flink, proc, finished_tasks=10))

    def cancel_on_flink(_):
      request = urllib.request.Request(
          f'{rest}/jobs/{job[0]}?mode=cancel', method='PATCH')
      urllib.request.urlopen(request, timeout=10).close()

    code, stderr, _ = _mid_job(
        _submit_command('submit_flink.sh', flink, sample, str(out),
                        '--parallelism', '2', '--flink-master',
                        f'localhost:{flink.settings["FLINK_REST_PORT"]}'),
        tmp_path,
        wait=running,
        act=cancel_on_flink,
        timeout_s=120)
    [name] = [j['name'] for j in _flink_jobs(flink) if j['jid'] == job[0]]
    assert code == 3, stderr[-4000:]
    assert stderr.strip().splitlines()[-1] == (
        f'preprocess: error: the job {name} was cancelled on the cluster, not '
        'by this command; nothing published'), stderr[-4000:]
    assert 'Traceback' not in stderr, stderr[-4000:]
    _assert_nothing_came_back(tmp_path)

  @pytest.mark.usefixtures('sigint_from_a_terminal')
  def test_ctrl_c_with_flink_runners_own_job_server(self, flink, sample,
                                                    tmp_path):
    """FlinkRunner without a job server: Beam starts one (a JVM) in the
    run and points SIGINT at it, so that a Ctrl-C raised a TypeError, left
    the job running, and the JVM outlived the command. The stop is the
    command's: the job is cancelled, and the job server ends with it."""
    jar = _flink_job_server_jar(tmp_path)
    command = [
        str(ROOT / 'scripts' / 'submit_flink.sh'), '--flink-master',
        f'localhost:{flink.settings["FLINK_REST_PORT"]}', '--environment-type',
        'EXTERNAL', '--environment-config', flink.worker_pool, '--parallelism',
        '2', '--config', TOY_CONFIG, '--input', sample['input'], '--test-input',
        sample['test_input'], '--output-dir',
        str(tmp_path / 'stopped'), '--', f'--flink_job_server_jar={jar}'
    ]
    stderr, job = _ctrl_c_mid_job(
        flink,
        sample,
        tmp_path,
        act=lambda proc: proc.send_signal(signal.SIGINT),
        command=command)
    assert 'may still' not in stderr, stderr[-4000:]
    assert _job_state(flink, job) == 'CANCELED'
    assert not [c for c in _java_commands() if str(jar) in c]
    assert 'Exception ignored' not in stderr, stderr[-4000:]
    _assert_nothing_came_back(tmp_path)

  @pytest.mark.usefixtures('sigint_from_a_terminal')
  def test_a_second_ctrl_c_still_cancels_the_job_on_the_cluster(
      self, flink, sample, tmp_path):
    """Ctrl-C twice ends the command at once, before the first stop's
    cancel has reached Flink: the job is cancelled all the same."""

    def twice(proc):
      proc.send_signal(signal.SIGINT)
      time.sleep(0.01)
      proc.send_signal(signal.SIGINT)

    stderr, job = _ctrl_c_mid_job(flink, sample, tmp_path, act=twice)
    # The second stop waits for Flink briefly; the job ends soon after.
    deadline = time.monotonic() + 30
    while (_job_state(flink, job) != 'CANCELED' and
           time.monotonic() < deadline):
      time.sleep(0.5)
    assert _job_state(flink, job) == 'CANCELED', stderr[-4000:]
    _assert_nothing_came_back(tmp_path)

  def test_taskmanager_killed_mid_job_fails_and_publishes_nothing(
      self, flink, sample, tmp_path):
    out = tmp_path / 'killed'
    command = _submit_command('submit_flink.sh', flink, sample, str(out),
                              '--parallelism', '2')
    code, stderr, _ = _mid_job(
        command,
        tmp_path,
        wait=lambda proc: _running_job(flink, proc, finished_tasks=20),
        act=lambda _: os.kill(flink.pid('taskmanager-1'), signal.SIGKILL),
        timeout_s=600)
    assert code != 0
    assert 'failed in state FAILED' in stderr, stderr[-4000:]
    assert 'nothing published' in stderr, stderr[-4000:]
    assert not out.exists()
    assert not [
        p.name for p in tmp_path.iterdir() if p.name.startswith('killed')
    ]


class TestSpark:
  """Spark 3.5 standalone: master, worker, Beam's Spark 3 job server."""

  def test_through_worker_pool_matches_in_process(self, spark, sample,
                                                  reference, tmp_path):
    out = str(tmp_path / 'spark')
    _submit(
        _submit_command('submit_spark.sh', spark, sample, out), cwd=tmp_path)
    manifest = _manifest(out)
    options = manifest['pipeline_options']
    assert options['job_endpoint'] == spark.job_endpoint
    assert options['environment_type'] == 'EXTERNAL'
    assert_same_outputs(reference, out, manifest)
    _assert_project_was_shipped(spark)
    _assert_job_server_logged(spark)
    # The executors ran on the cluster's worker, not in the driver.
    assert 'Asked to launch executor' in spark.log('worker')

  def test_sigterm_cancels_the_job_on_the_cluster(self, spark, sample,
                                                  tmp_path):
    """On Spark, Beam's cancel stops the job: the job server shuts the
    job's SparkContext down."""
    out = tmp_path / 'stopped'
    seen = len(spark.log('job-server'))

    def job_log():
      return spark.log('job-server')[seen:]

    def mid_job(proc):
      # Once the job's first Spark jobs (its stages) have run.
      deadline = time.monotonic() + 600
      while (job_log().count('DAGScheduler - Job ') < 20 and
             proc.poll() is None and time.monotonic() < deadline):
        time.sleep(0.5)
      assert proc.poll() is None, 'the job ended before it could be stopped'

    code, stderr, _ = _mid_job(
        _submit_command('submit_spark.sh', spark, sample, str(out)),
        tmp_path,
        wait=mid_job,
        act=lambda proc: proc.send_signal(signal.SIGTERM),
        timeout_s=120)
    assert code == 128 + signal.SIGTERM, stderr[-4000:]
    assert stderr.strip().splitlines()[-1] == (
        f'preprocess: stopped by SIGTERM; nothing published to {out}')
    assert 'may still' not in stderr, stderr[-4000:]
    assert 'Canceling job invocation' in job_log()
    # The job server stops the job's SparkContext as it cancels, but reports
    # the job cancelled at once; on a busy machine the context takes a few
    # seconds to finish stopping.
    deadline = time.monotonic() + 60
    while ('Successfully stopped SparkContext' not in job_log() and
           time.monotonic() < deadline):
      time.sleep(0.5)
    assert 'Successfully stopped SparkContext' in job_log(), job_log()[-3000:]
    _assert_nothing_came_back(tmp_path)

  def test_taken_port_is_replaced_and_printed(self, spark):
    port = spark.settings['JOB_SERVER_PORT']
    assert port != str(spark.taken_port)
    assert (f'port {spark.taken_port} (Beam job server) is taken; using free '
            f'port {port} instead') in spark.up_output
    assert f'--job-endpoint localhost:{port}' in spark.up_output
