"""Which cluster a stopped preprocess cancels its job on, and by what name.

The cancel itself runs against a real Flink cluster in test_engines.py.
"""

from apache_beam.options.pipeline_options import GoogleCloudOptions
from apache_beam.options.pipeline_options import PipelineOptions

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
