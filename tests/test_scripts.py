"""scripts/run_local.sh and scripts/submit_*.sh: the commands they would run.

Every script is run with --dry-run only; the printed command is parsed back
into words and its Beam options are checked with Beam's own option parser, so
a typo in an option name or a broken quote fails here rather than on a
cluster. The scripts run with a minimal environment so that settings exported
in the caller's shell cannot leak in.
"""

import os
import pathlib
import shlex
import subprocess

from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.options.pipeline_options import FlinkRunnerOptions
from apache_beam.options.pipeline_options import GoogleCloudOptions
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import PortableOptions
from apache_beam.options.pipeline_options import SetupOptions
from apache_beam.options.pipeline_options import SparkRunnerOptions
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.options.pipeline_options import WorkerOptions
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / 'scripts'

DATAFLOW = [
    '--project', 'my-project', '--region', 'europe-west1', '--temp-location',
    'gs://bucket/tmp', '--input', 'gs://bucket/raw/adult-*.csv', '--output-dir',
    'gs://bucket/preprocess'
]


def run_script(name, *args, env=None, cwd=ROOT):
  base = {'PATH': os.environ['PATH'], 'HOME': os.environ.get('HOME', '/tmp')}
  base.update(env or {})
  return subprocess.run([str(SCRIPTS / name), *args],
                        cwd=str(cwd),
                        env=base,
                        capture_output=True,
                        text=True,
                        timeout=60,
                        check=False)


def dry_run(name, *args, env=None, cwd=ROOT):
  """Returns (preprocess flags, Beam options, printed text) of a dry run."""
  proc = run_script(name, '--dry-run', *args, env=env, cwd=cwd)
  assert proc.returncode == 0, proc.stderr
  lines = [l for l in proc.stdout.splitlines() if not l.startswith('#')]
  words = shlex.split(' '.join(l.rstrip('\\').strip() for l in lines))
  assert words[1:3] == ['-m', 'pipeline.preprocess'], proc.stdout
  own = [
      w for w in words[3:]
      if w.split('=')[0] in ('--config', '--input', '--test-input',
                             '--output-dir', '--num-shards', '--overwrite',
                             '--write-raw', '--progress-seconds')
  ]
  beam_args = [w for w in words[3:] if w not in own]
  return dict(w.split('=', 1) if '=' in w else (w, True) for w in own), \
      PipelineOptions(beam_args), proc.stdout


def fails(name, *args, env=None):
  proc = run_script(name, '--dry-run', *args, env=env)
  assert proc.returncode == 2, (proc.stdout, proc.stderr)
  assert proc.stdout == ''
  return proc.stderr


@pytest.mark.parametrize('name', [
    'run_local.sh', 'submit_dataflow.sh', 'submit_flink.sh', 'submit_spark.sh'
])
def test_help_lists_flags_and_env_vars(name):
  proc = run_script(name, '--help')
  assert proc.returncode == 0, proc.stderr
  for text in ('--input', 'INPUT', '--output-dir', 'OUTPUT_DIR', '--dry-run'):
    assert text in proc.stdout


def test_run_local_defaults_to_adult_on_the_direct_runner():
  flags, options, _ = dry_run('run_local.sh')
  assert flags == {
      '--config': 'schemas/census.yaml',
      '--input': 'data/census/adult.data',
      '--test-input': 'data/census/adult.test',
      '--output-dir': 'out/preprocess'
  }
  assert options.view_as(StandardOptions).runner == 'DirectRunner'


def test_run_local_multi_processing():
  flags, options, _ = dry_run('run_local.sh', '--input', 'in/*.csv',
                              '--output-dir=o', '--direct-num-workers', '2',
                              '--overwrite', '--progress-seconds', '2.5', '--',
                              '--job_name=x')
  assert flags == {
      '--config': 'schemas/census.yaml',
      '--input': 'in/*.csv',
      '--output-dir': 'o',
      '--overwrite': True,
      '--progress-seconds': '2.5'
  }
  direct = options.view_as(DirectOptions)
  assert direct.direct_num_workers == 2
  assert direct.direct_running_mode == 'multi_processing'
  assert options.view_as(GoogleCloudOptions).job_name == 'x'


def test_run_local_takes_env_vars_and_caller_relative_paths(tmp_path):
  flags, options, _ = dry_run(
      'run_local.sh',
      '--config',
      'my.yaml',
      cwd=tmp_path,
      env={
          'INPUT': 'a b/*.csv',
          'OUTPUT_DIR': '/abs/out',
          'DIRECT_RUNNING_MODE': 'multi_threading'
      })
  assert flags == {
      '--config': f'{tmp_path}/my.yaml',
      '--input': f'{tmp_path}/a b/*.csv',
      '--output-dir': '/abs/out'
  }
  assert options.view_as(DirectOptions).direct_running_mode == 'multi_threading'


def test_run_local_rejects_bad_values():
  assert "--direct-running-mode must be one of" in fails(
      'run_local.sh', '--direct-running-mode', 'fast')
  assert '--num-shards must be an integer >= 1' in fails(
      'run_local.sh', '--num-shards', '0')
  assert "unknown flag '--inptu'" in fails('run_local.sh', '--inptu', 'x')
  assert '--input needs a value' in fails('run_local.sh', '--input')


def test_dataflow_options():
  flags, options, text = dry_run('submit_dataflow.sh', *DATAFLOW,
                                 '--max-workers', '25', '--write-raw')
  assert flags == {
      '--config': 'schemas/census.yaml',
      '--input': 'gs://bucket/raw/adult-*.csv',
      '--output-dir': 'gs://bucket/preprocess',
      '--write-raw': True
  }
  assert options.view_as(StandardOptions).runner == 'DataflowRunner'
  gcp = options.view_as(GoogleCloudOptions)
  assert (gcp.project, gcp.region) == ('my-project', 'europe-west1')
  assert gcp.temp_location == 'gs://bucket/tmp'
  assert gcp.staging_location == 'gs://bucket/tmp/staging'
  assert gcp.job_name.startswith('preprocess-census-')
  assert options.view_as(SetupOptions).setup_file == './setup.py'
  worker = options.view_as(WorkerOptions)
  assert worker.machine_type == 'n1-standard-4'
  assert worker.max_num_workers == 25
  assert "--input='gs://bucket/raw/adult-*.csv'" in text


def test_dataflow_settings_from_env():
  _, options, _ = dry_run(
      'submit_dataflow.sh',
      env={
          'GOOGLE_CLOUD_PROJECT': 'p1',
          'REGION': 'us-central1',
          'TEMP_LOCATION': 'gs://b/t',
          'STAGING_LOCATION': 'gs://b/s',
          'INPUT': 'gs://b/in.csv',
          'TEST_INPUT': 'gs://b/test.csv',
          'OUTPUT_DIR': 'gs://b/out',
          'MACHINE_TYPE': 'n2-highmem-8',
          'JOB_NAME': 'nightly',
          'SDK_CONTAINER_IMAGE': 'gcr.io/p1/img:1'
      })
  gcp = options.view_as(GoogleCloudOptions)
  assert (gcp.project, gcp.region, gcp.staging_location,
          gcp.job_name) == ('p1', 'us-central1', 'gs://b/s', 'nightly')
  worker = options.view_as(WorkerOptions)
  assert worker.machine_type == 'n2-highmem-8'
  assert worker.sdk_container_image == 'gcr.io/p1/img:1'


@pytest.mark.parametrize('drop,message', [
    ('--project', 'the GCP project is required: pass --project or set '
     'PROJECT'),
    ('--region', 'the Dataflow region is required: pass --region or set '
     'REGION'),
    ('--temp-location', 'a gs:// temp location is required: pass '
     '--temp-location or set TEMP_LOCATION'),
    ('--input', 'the input is required: pass --input or set INPUT'),
    ('--output-dir', 'the output directory is required: pass --output-dir or '
     'set OUTPUT_DIR'),
])
def test_dataflow_missing_setting(drop, message):
  i = DATAFLOW.index(drop)
  assert message in fails('submit_dataflow.sh', *DATAFLOW[:i],
                          *DATAFLOW[i + 2:])


def test_dataflow_rejects_local_paths():
  args = list(DATAFLOW)
  args[args.index('--output-dir') + 1] = 'out/preprocess'
  assert '--output-dir must be a gs:// path on Dataflow' in fails(
      'submit_dataflow.sh', *args)
  assert '--job-name must be lower-case' in fails('submit_dataflow.sh',
                                                  *DATAFLOW, '--job-name',
                                                  'Nightly_Run')


def test_flink_runner():
  _, options, _ = dry_run('submit_flink.sh', '--flink-master',
                          'flink.example:8081', '--parallelism', '8', '--input',
                          'gs://b/in.csv', '--output-dir', 'gs://b/out')
  assert options.view_as(StandardOptions).runner == 'FlinkRunner'
  assert options.view_as(FlinkRunnerOptions).flink_master == (
      'flink.example:8081')
  assert options.view_as(FlinkRunnerOptions).parallelism == 8
  portable = options.view_as(PortableOptions)
  assert portable.environment_type == 'DOCKER'
  assert options.view_as(SetupOptions).setup_file == './setup.py'


def test_flink_job_endpoint():
  _, options, _ = dry_run('submit_flink.sh', '--job-endpoint', 'localhost:8099',
                          '--environment-type', 'external',
                          '--environment-config', 'localhost:50000', '--input',
                          'gs://b/in.csv', '--output-dir', 'gs://b/out')
  assert options.view_as(StandardOptions).runner == 'PortableRunner'
  portable = options.view_as(PortableOptions)
  assert portable.job_endpoint == 'localhost:8099'
  assert (portable.environment_type,
          portable.environment_config) == ('EXTERNAL', 'localhost:50000')
  # SDK workers are kept between stages unless told otherwise.
  assert int(portable.environment_cache_millis) == 60000
  _, options, _ = dry_run('submit_flink.sh', '--job-endpoint', 'h:8099',
                          '--environment-type', 'EXTERNAL',
                          '--environment-config', 'h:50000',
                          '--environment-cache-ms', '0', '--input',
                          'gs://b/in.csv', '--output-dir', 'gs://b/out')
  assert int(options.view_as(PortableOptions).environment_cache_millis) == 0


def test_flink_job_endpoint_alone_warns_that_a_stop_cannot_cancel_the_job():
  args = ('--job-endpoint', 'h:8099', '--input', 'gs://b/in.csv',
          '--output-dir', 'gs://b/out')
  proc = run_script('submit_flink.sh', '--dry-run', *args)
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr.strip() == (
      "submit_flink.sh: warning: without --flink-master HOST:PORT (the "
      "cluster's REST address), a run stopped by Ctrl-C or SIGTERM can only "
      "ask the job server to cancel its job, and a running Flink batch job "
      "goes on")
  proc = run_script('submit_flink.sh', '--dry-run', *args, '--flink-master',
                    'h:8081')
  assert proc.returncode == 0 and proc.stderr == '', proc.stderr


def test_flink_job_endpoint_with_the_clusters_rest_address():
  # Where a stopped run cancels its job (pipeline/remote_job.py).
  _, options, _ = dry_run(
      'submit_flink.sh',
      '--job-endpoint',
      'localhost:8099',
      '--environment-type',
      'EXTERNAL',
      '--environment-config',
      'localhost:50000',
      '--input',
      'gs://b/in.csv',
      '--output-dir',
      'gs://b/out',
      env={'FLINK_MASTER': 'localhost:8081'})
  assert options.view_as(StandardOptions).runner == 'PortableRunner'
  assert options.view_as(PortableOptions).job_endpoint == 'localhost:8099'
  assert options.view_as(FlinkRunnerOptions).flink_master == 'localhost:8081'


def test_flink_missing_or_conflicting_target():
  args = ['--input', 'gs://b/in.csv', '--output-dir', 'gs://b/out']
  message = fails('submit_flink.sh', *args)
  assert 'where to run is required: pass --flink-master' in message
  assert 'JOB_ENDPOINT' in message
  assert "--flink-master [local] starts a cluster of Beam's own" in fails(
      'submit_flink.sh', *args, '--job-endpoint', 'h:1', '--flink-master',
      '[local]')
  assert ('--environment-type EXTERNAL: the environment config is required'
          in fails('submit_flink.sh', *args, '--job-endpoint', 'h:1',
                   '--environment-type', 'EXTERNAL'))


def test_flink_warns_about_local_paths():
  proc = run_script('submit_flink.sh', '--dry-run', '--flink-master', '[local]',
                    '--input', '/data/in.csv', '--output-dir', '/data/out')
  assert proc.returncode == 0, proc.stderr
  assert '--input /data/in.csv is a local path' in proc.stderr


def test_spark_runner_modes():
  args = ['--input', 'gs://b/in.csv', '--output-dir', 'gs://b/out']
  _, options, _ = dry_run(
      'submit_spark.sh', *args, env={'SPARK_MASTER_URL': 'spark://m:7077'})
  assert options.view_as(StandardOptions).runner == 'SparkRunner'
  assert options.view_as(SparkRunnerOptions).spark_master_url == (
      'spark://m:7077')

  _, options, _ = dry_run('submit_spark.sh', *args, '--spark-rest-url',
                          'http://m:6066')
  spark = options.view_as(SparkRunnerOptions)
  assert spark.spark_submit_uber_jar
  assert spark.spark_rest_url == 'http://m:6066'

  _, options, _ = dry_run('submit_spark.sh', *args, '--job-endpoint', 'js:8099',
                          '--environment-type', 'LOOPBACK')
  assert options.view_as(StandardOptions).runner == 'PortableRunner'
  assert options.view_as(PortableOptions).environment_type == 'LOOPBACK'
  # LOOPBACK runs user code in the launching process: nothing to stage.
  assert options.view_as(SetupOptions).setup_file is None
  assert '--environment-cache-ms does not apply' in fails(
      'submit_spark.sh', *args, '--job-endpoint', 'js:8099',
      '--environment-type', 'LOOPBACK', '--environment-cache-ms', '5')


def test_spark_missing_target():
  message = fails('submit_spark.sh', '--input', 'gs://b/in.csv', '--output-dir',
                  'gs://b/out')
  assert 'where to run is required: pass --spark-master-url' in message
  assert 'SPARK_MASTER_URL' in message
