"""A stopped preprocess cancels the job it submitted to a runner elsewhere.

On the DirectRunner the job runs inside the command, so a stop ends it. On
Flink, Spark or Dataflow the command only submits the job and waits for it:
a stop that just ended the command left the job running on the cluster,
still writing into the staging directory that the stop removes (and using
the cluster's slots until it finished). So the stop cancels the job and
waits, a bounded time, for it to end, before that directory is removed.

Beam's cancel (the job API's Cancel) is not enough on Flink: Beam's Flink
job server marks the job CANCELLED at once and stops waiting for it, but a
running batch job goes on on the cluster (measured with Beam's 2.62 job
server and Flink 1.19: RUNNING until the cluster stopped). Where the
cluster's REST address is known (`--flink_master` HOST:PORT), the job is
cancelled there, found by the name this command gives it (`--job_name`),
and the stop waits for Flink to report it ended. A name the user gave may
be another job's too (last night's run, a colleague's): the jobs of that
name that Flink listed just before this one was submitted are left alone.

Without `--job_endpoint`, FlinkRunner and SparkRunner start a Beam job
server of their own (a JVM) inside `Pipeline.run()` (`StopOnExitJobServer`)
and the run is the one to stop it. Beam points SIGINT at the server's
`stop`, which Python calls with arguments it does not take: a Ctrl-C from
then on raised a TypeError instead of stopping the command and cancelling
its job. And Beam stops the server only at exit, after the command has
removed its temporary directory, where the server keeps its files: the stop
failed on the missing directory before it ended the JVM, which ran on after
the command. While this run submits, a job server's SIGINT handler is kept
instead of installed, and `close()` stops the server (its JVM and files)
once the job has ended or been cancelled.
"""

import contextlib
import json
import os
import signal
import sys
import time
from typing import Any, Dict, FrozenSet, Iterator, List, Optional
import urllib.parse
import urllib.request

from apache_beam.options.pipeline_options import FlinkRunnerOptions
from apache_beam.options.pipeline_options import GoogleCloudOptions
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability import job_server
from apache_beam.runners.runner import PipelineResult
from apache_beam.runners.runner import PipelineState

from core.errors import first_line
from pipeline import process_exit

# How long a stop waits for a cancelled job to end: within the stop's grace
# period (core/interrupts.py, 10 s).
CANCEL_WAIT_S = 6.0
# How long a stop that ends the command at once (a second signal, or the
# grace period over) waits for it.
ABANDON_WAIT_S = 2.0
_POLL_S = 0.2
_REST_TIMEOUT_S = 3.0
# Flink's states of a job that has ended (its REST API's JobStatus).
_FLINK_ENDED = ('CANCELED', 'FAILED', 'FINISHED', 'SUSPENDED')


def flink_rest_address(options: PipelineOptions) -> Optional[str]:
  """The Flink cluster's REST address, where one was given (not Beam's
  `[local]` or `[auto]`)."""
  master = (options.view_as(FlinkRunnerOptions).flink_master or '').strip()
  if not master or master.startswith('['):
    return None
  return master if '://' in master else 'http://' + master


def name_the_job(options: PipelineOptions) -> None:
  """Gives the job a name of its own (unless given one) where a stop may
  have to find it on a Flink cluster: Flink names the job after it."""
  cloud = options.view_as(GoogleCloudOptions)
  if flink_rest_address(options) and not cloud.job_name:
    cloud.job_name = (f'preprocess-{time.strftime("%Y%m%d-%H%M%S")}-'
                      f'{os.getpid()}')


class CancelledElsewhere(Exception):
  """The runner ended the job as cancelled, and no stop of this command had
  asked it to: someone cancelled it on the cluster (Flink's web UI, `flink
  cancel`, Dataflow's console)."""


class SubmittedJob:
  """The job a run submitted to a runner elsewhere, once it has: what a stop
  cancels, whichever thread ends the command."""

  def __init__(self, options: PipelineOptions):
    self._options = options
    self.result: Optional[PipelineResult] = None
    # The Flink jobs of this job's name before it was submitted; None where
    # Flink could not be asked, for the reason in _unlisted.
    self._others: Optional[FrozenSet[str]] = None
    self._unlisted = 'not asked'
    # Job servers the runner started for this run.
    self._servers: List[job_server.JobServer] = []

  @contextlib.contextmanager
  def submitting(self) -> Iterator[None]:
    """Around `Pipeline.run()` of a runner elsewhere: notes the Flink jobs
    of this job's name, and keeps the job server the runner may start from
    taking SIGINT."""
    self._note_other_jobs()
    beams_signal = job_server.signal
    job_server.signal = _KeepJobServers(
        self._servers)  # type: ignore[assignment]
    try:
      yield
    finally:
      job_server.signal = beams_signal

  def close(self, wait_s: float = CANCEL_WAIT_S) -> None:
    """Stops the job servers the runner started for this run. Never
    raises: what is left is said, and the run ends as it would have.

    Beam's reader of the job's messages ends once the server has said the
    job ended (cancelled by a stop, say); a server stopped before that cut
    it off mid-read, and its thread printed gRPC's error. It is waited for,
    up to `wait_s`.
    """
    if self._servers:
      process_exit.wait_for_workers(wait_s, (process_exit.MESSAGE_READER,))
    while self._servers:
      server = self._servers.pop()
      try:
        server.stop()
      except Exception as e:  # noqa: BLE001 - said, and the run goes on
        print(
            f'preprocess: could not stop the runner\'s job server '
            f'({first_line(e)}); it may still run',
            file=sys.stderr)

  def _note_other_jobs(self) -> None:
    """Notes the jobs on the Flink cluster that already bear this job's
    name, which a stop must not cancel. Never raises: the cluster's REST
    API is not needed to run the job."""
    rest = flink_rest_address(self._options)
    if not rest:
      return
    try:
      self._others = frozenset(job['jid']
                               for job in _rest(rest, '/jobs/overview')['jobs']
                               if job['name'] == self._job_name())
    except (OSError, ValueError, KeyError) as e:
      self._others, self._unlisted = None, first_line(e)

  def _job_name(self) -> str:
    return self._options.view_as(GoogleCloudOptions).job_name or ''

  def cancelled_elsewhere(self, error: BaseException) -> bool:
    """Whether `error`, which ended the wait for the job, says the job was
    cancelled: Beam's Flink job server reports such a job FAILED, with
    Flink's JobCancellationException; other runners report it CANCELLED."""
    if self.result is None:
      return False
    if 'JobCancellationException' in str(error):
      return True
    try:
      return self.result.state == PipelineState.CANCELLED
    except Exception:  # noqa: BLE001 - the runner cannot say: not known
      return False

  def cancelled_message(self) -> str:
    name = self._job_name()
    return (f'the job{f" {name}" if name else ""} was cancelled on the '
            'cluster, not by this command')

  def cancel(self, wait_s: float = CANCEL_WAIT_S) -> Optional[str]:
    """Cancels the job, if one was submitted and has not ended; returns what
    the user should know (None once the job is known to have ended). Never
    raises: the stop that calls it goes on to remove the staging directory
    whatever the cancel met."""
    if self.result is None:
      return None
    try:
      return self._cancel(self.result, wait_s)
    except Exception as e:  # noqa: BLE001 - said, and the stop goes on
      return f'could not cancel the job ({first_line(e)}); it may still run'

  def _cancel(self, result: PipelineResult, wait_s: float) -> Optional[str]:
    deadline = time.monotonic() + wait_s
    rest = flink_rest_address(self._options)
    if not rest:
      return _cancel_elsewhere(result, wait_s, deadline)
    if self._others is None:
      # Not told from other jobs of its name: cancelled by Beam only.
      said: Optional[str] = (
          f'could not cancel the job {self._job_name()} on Flink at {rest} '
          '(its jobs could not be listed before the submission: '
          f'{self._unlisted}); it may still run there')
    else:
      said = _cancel_on_flink(rest, self._job_name(), self._others, deadline)
    # Flink's word on the job is the one that counts; Beam's cancel only
    # lets the job server stop waiting for it.
    try:
      _cancel_through_beam(result)
    except Exception:  # noqa: BLE001 - Flink's answer was said above
      pass
    return said


class _KeepJobServers:
  """The `signal` module as Beam's job_server module sees it while a run
  submits: a job server's `stop` set as a signal handler is kept for the run
  to call, not installed."""

  def __init__(self, servers: List[job_server.JobServer]):
    self._servers = servers

  def __getattr__(self, name: str) -> Any:
    return getattr(signal, name)

  def signal(self, signum: int, handler: Any) -> Any:
    server = getattr(handler, '__self__', None)
    if isinstance(server, job_server.JobServer):
      self._servers.append(server)
      return signal.getsignal(signum)
    return signal.signal(signum, handler)


def _cancel_elsewhere(result: PipelineResult, wait_s: float,
                      deadline: float) -> Optional[str]:
  """Beam's cancel, waited for: the runner's word on the job."""
  if not _cancel_through_beam(result):
    return None
  state = None
  while time.monotonic() < deadline:
    try:
      state = result.state
    except Exception as e:  # noqa: BLE001 - said, and the stop goes on
      return (f'cancelled the job, but could not read its state '
              f'({first_line(e)}); it may still run')
    if PipelineState.is_terminal(state):
      return None
    time.sleep(_POLL_S)
  return (f'cancelled the job, which was still {state} {wait_s:.0f} s later; '
          'it may still write into the staging directory')


def _cancel_through_beam(result: PipelineResult) -> bool:
  """The job API's Cancel, unless the job has ended (False then)."""
  if PipelineState.is_terminal(result.state):
    return False
  result.cancel()
  return True


def jobs_to_cancel(overview: List[Dict[str, Any]], job_name: str,
                   others: FrozenSet[str]) -> List[str]:
  """The ids of the jobs in Flink's `/jobs/overview` list that bear
  `job_name`, were not there before the submission and have not ended."""
  return [
      job['jid'] for job in overview if job['name'] == job_name and
      job['jid'] not in others and job['state'] not in _FLINK_ENDED
  ]


def _cancel_on_flink(rest: str, job_name: str, others: FrozenSet[str],
                     deadline: float) -> Optional[str]:
  """Cancels this submission's Flink jobs named `job_name` that have not
  ended and waits until Flink reports them ended; None once it has."""
  try:
    jobs = jobs_to_cancel(
        _rest(rest, '/jobs/overview')['jobs'], job_name, others)
    for jid in jobs:
      _rest(rest, f'/jobs/{jid}?mode=cancel', method='PATCH')
    pending = list(jobs)
    while pending and time.monotonic() < deadline:
      time.sleep(_POLL_S)
      pending = [
          jid for jid in pending
          if _rest(rest, f'/jobs/{jid}')['state'] not in _FLINK_ENDED
      ]
  except (OSError, ValueError, KeyError) as e:
    return (f'could not cancel the job {job_name} on Flink at {rest} '
            f'({first_line(e)}); it may still run there')
  if pending:
    return (f'asked Flink at {rest} to cancel the job {job_name}, which had '
            'not ended when the stop went on; it may still write into the '
            'staging directory')
  return None


def _rest(base: str, path: str, method: str = 'GET') -> dict:
  request = urllib.request.Request(
      urllib.parse.urljoin(base.rstrip('/') + '/', path.lstrip('/')),
      method=method)
  with urllib.request.urlopen(request, timeout=_REST_TIMEOUT_S) as response:
    body = response.read()
  return json.loads(body) if body.strip() else {}
