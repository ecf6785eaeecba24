"""Which cluster a stopped preprocess cancels its job on, and by what name.

The cancel itself runs against a real Flink cluster in test_engines.py.
"""

import socket

from apache_beam.options.pipeline_options import GoogleCloudOptions
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult
from apache_beam.runners.runner import PipelineState

from pipeline import remote_job


def test_the_rest_address_is_flink_master_unless_beam_starts_the_cluster():

  def address(*flags):
    return remote_job.flink_rest_address(PipelineOptions(list(flags)))

  assert address('--flink_master=localhost:8081') == 'http://localhost:8081'
  assert address('--flink_master=https://f.example') == 'https://f.example'
  assert address('--flink_master=[local]') is None
  assert address('--flink_master=[auto]') is None
  assert address() is None


def test_a_job_that_may_need_finding_gets_a_name_of_its_own():
  options = PipelineOptions(['--flink_master=localhost:8081'])
  remote_job.name_the_job(options)
  name = options.view_as(GoogleCloudOptions).job_name
  assert name.startswith('preprocess-')
  # Given by the user: kept. Nothing to find: not named.
  given = PipelineOptions(['--flink_master=h:8081', '--job_name=nightly'])
  remote_job.name_the_job(given)
  assert given.view_as(GoogleCloudOptions).job_name == 'nightly'
  local = PipelineOptions(['--flink_master=[local]'])
  remote_job.name_the_job(local)
  assert local.view_as(GoogleCloudOptions).job_name is None


def test_a_cancel_that_fails_is_said_and_never_raised():
  """A stop goes on to remove the staging directory whatever the cancel
  met; the user is told the job may still run."""
  job = remote_job.SubmittedJob(PipelineOptions([]))
  assert job.cancel() is None  # nothing submitted
  # Beam's own result class, which cannot cancel.
  job.result = PipelineResult(PipelineState.RUNNING)
  said = job.cancel(wait_s=0.5)
  assert said.startswith('could not cancel the job ('), said
  assert said.endswith('it may still run'), said
  job.result = PipelineResult(PipelineState.DONE)
  assert job.cancel(wait_s=0.5) is None  # ended: nothing to cancel
  # A Flink REST address where nothing listens.
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  flink = remote_job.SubmittedJob(
      PipelineOptions([f'--flink_master=localhost:{port}', '--job_name=j']))
  with flink.submitting():
    pass  # Flink could not be asked for its jobs of that name
  flink.result = PipelineResult(PipelineState.RUNNING)
  said = flink.cancel(wait_s=0.5)
  assert said.startswith(
      f'could not cancel the job j on Flink at http://localhost:{port} (its '
      'jobs could not be listed before the submission: '), said
  assert 'Connection refused' in said, said
  assert said.endswith('it may still run there'), said


def test_a_stop_cancels_its_own_job_not_others_of_its_name():
  """`--job_name nightly` given by the user: last night's job, still
  running, and a colleague's, are not this run's to cancel."""
  overview = [
      {
          'jid': 'a1',
          'name': 'nightly',
          'state': 'RUNNING'
      },
      {
          'jid': 'b2',
          'name': 'nightly',
          'state': 'RUNNING'
      },
      {
          'jid': 'c3',
          'name': 'nightly',
          'state': 'FINISHED'
      },
      {
          'jid': 'd4',
          'name': 'other',
          'state': 'RUNNING'
      },
      {
          'jid': 'e5',
          'name': 'nightly',
          'state': 'CREATED'
      },
  ]
  # Listed before the submission: a1 (running) and c3.
  assert remote_job.jobs_to_cancel(overview, 'nightly',
                                   frozenset({'a1', 'c3'})) == ['b2', 'e5']
  assert remote_job.jobs_to_cancel(overview, 'nightly',
                                   frozenset({'a1', 'b2', 'e5'})) == []
  assert remote_job.jobs_to_cancel(overview, 'other', frozenset()) == ['d4']


def test_a_job_cancelled_on_the_cluster_is_told_from_a_failed_one():
  job = remote_job.SubmittedJob(
      PipelineOptions(['--flink_master=localhost:1', '--job_name=nightly']))
  flink_said = RuntimeError(
      'Pipeline nightly_1f2e failed in state FAILED: org.apache.flink.runtime.'
      'client.JobCancellationException: Job was cancelled.')
  assert not job.cancelled_elsewhere(flink_said)  # nothing submitted
  job.result = PipelineResult(PipelineState.FAILED)
  assert job.cancelled_elsewhere(flink_said)
  assert not job.cancelled_elsewhere(RuntimeError('worker lost'))
  job.result = PipelineResult(PipelineState.CANCELLED)
  assert job.cancelled_elsewhere(RuntimeError('failed in state CANCELLED'))
  assert job.cancelled_message() == (
      'the job nightly was cancelled on the cluster, not by this command')
