"""Starts one Beam Python SDK worker the way Beam's SDK container does.

Beam's worker pool (`python -m apache_beam.runners.worker.worker_pool_main
--container_executable THIS`) runs this once per SDK worker a Flink
TaskManager or Spark executor asks for, with the container contract's flags
(--id, --provision_endpoint, --artifact_endpoint, --control_endpoint,
--logging_endpoint). Like the container's boot program it

  1. asks the runner's provision service for the job's pipeline options and
     the artifacts the launcher staged (--setup_file's sdist, staged as
     workflow.tar.gz, and any --extra_package),
  2. fetches them from the runner's artifact service,
  3. installs them with pip (no dependencies: the pinned stack is this
     interpreter's own) into a folder of the pool, once per set of artifacts,
     and checks that this interpreter satisfies what they require,
  4. runs `apache_beam.runners.worker.sdk_worker_main` with that folder first
     on its path.

So the job's own code reaches the worker only through the runner, as it does
on a remote cluster; the interpreter running this holds the pinned stack but
not the project.
"""

import argparse
import fcntl
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys

from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_artifact_api_pb2
from apache_beam.portability.api import beam_artifact_api_pb2_grpc
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.portability.api import beam_provision_api_pb2_grpc
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.portability.api import endpoints_pb2
from google.protobuf import json_format
from google.protobuf import text_format
import grpc
from packaging.requirements import Requirement

WORKFLOW_TARBALL = 'workflow.tar.gz'
EXTRA_PACKAGES_FILE = 'extra_packages.txt'
REQUIREMENTS_FILE = 'requirements.txt'
_GRPC_OPTIONS = [('grpc.max_receive_message_length', 64 << 20)]


def _log(message: str) -> None:
  print(
      f'sdk-worker-boot[{os.getpid()}]: {message}', file=sys.stderr, flush=True)


def _provision_info(endpoint: str, worker_id: str):
  with grpc.insecure_channel(endpoint, options=_GRPC_OPTIONS) as channel:
    stub = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
    response = stub.GetProvisionInfo(
        beam_provision_api_pb2.GetProvisionInfoRequest(),
        metadata=[('worker_id', worker_id)])
  return response.info


def _staged_name(artifact) -> str:
  if artifact.role_urn != common_urns.artifact_roles.STAGING_TO.urn:
    return ''
  payload = beam_runner_api_pb2.ArtifactStagingToRolePayload()
  payload.ParseFromString(artifact.role_payload)
  return payload.staged_name


def _fetch_artifacts(endpoint: str, worker_id: str, artifacts,
                     dest: str) -> list:
  """Writes each staged artifact to dest under its staged name."""
  os.makedirs(dest, exist_ok=True)
  names = []
  with grpc.insecure_channel(endpoint, options=_GRPC_OPTIONS) as channel:
    stub = beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(channel)
    for artifact in artifacts:
      name = _staged_name(artifact)
      if not name:
        _log(f'skipping an artifact without a staged name: '
             f'{artifact.type_urn}')
        continue
      path = os.path.join(dest, name)
      with open(path + '.part', 'wb') as f:
        for chunk in stub.GetArtifact(
            beam_artifact_api_pb2.GetArtifactRequest(artifact=artifact),
            metadata=[('worker_id', worker_id)]):
          f.write(chunk.data)
      os.replace(path + '.part', path)
      names.append(name)
  return names


def _packages_to_install(staged_dir: str, names: list) -> list:
  """The staged packages, in the order Beam's container installs them."""
  packages = []
  if EXTRA_PACKAGES_FILE in names:
    with open(
        os.path.join(staged_dir, EXTRA_PACKAGES_FILE), encoding='utf-8') as f:
      packages += [line.strip() for line in f if line.strip()]
  if WORKFLOW_TARBALL in names:
    packages.append(WORKFLOW_TARBALL)
  if REQUIREMENTS_FILE in names:
    _log(f'{REQUIREMENTS_FILE} was staged but is not installed: this worker '
         'environment brings its own pinned packages')
  return [os.path.join(staged_dir, p) for p in packages]


def _digest(paths: list) -> str:
  h = hashlib.sha256()
  for path in paths:
    h.update(os.path.basename(path).encode())
    with open(path, 'rb') as f:
      for block in iter(lambda: f.read(1 << 20), b''):
        h.update(block)
  return h.hexdigest()[:16]


def _unmet_requirements(site_dir: str) -> list:
  """Requirements of the installed packages this interpreter does not meet."""
  unmet = []
  for dist in importlib.metadata.distributions(path=[site_dir]):
    for line in dist.requires or []:
      req = Requirement(line)
      if req.marker and not req.marker.evaluate({'extra': ''}):
        continue
      try:
        version = importlib.metadata.version(req.name)
      except importlib.metadata.PackageNotFoundError:
        unmet.append(f'{dist.metadata["Name"]} needs {req}: not installed')
        continue
      if req.specifier and not req.specifier.contains(
          version, prereleases=True):
        unmet.append(f'{dist.metadata["Name"]} needs {req}: {version} is '
                     'installed')
  return unmet


def _install(packages: list, root: str) -> str:
  """Installs packages into root/<digest> once; returns that folder."""
  site_dir = os.path.join(root, _digest(packages))
  os.makedirs(root, exist_ok=True)
  with open(site_dir + '.lock', 'w', encoding='utf-8') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(os.path.join(site_dir, '.installed')):
      _log(f'installing {[os.path.basename(p) for p in packages]} into '
           f'{site_dir}')
      subprocess.run([
          sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps',
          '--no-build-isolation', '--disable-pip-version-check', '--no-index',
          '--upgrade', '--target', site_dir, *packages
      ],
                     check=True,
                     stdout=sys.stderr)
      unmet = _unmet_requirements(site_dir)
      if unmet:
        raise SystemExit(
            'sdk-worker-boot: this worker environment lacks what the staged '
            'packages require: ' + '; '.join(unmet))
      with open(os.path.join(site_dir, '.installed'), 'w', encoding='utf-8'):
        pass
  return site_dir


def _descriptor(url: str) -> str:
  return text_format.MessageToString(
      endpoints_pb2.ApiServiceDescriptor(url=url))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--id', required=True)
  parser.add_argument('--provision_endpoint', required=True)
  parser.add_argument('--artifact_endpoint', default='')
  parser.add_argument('--control_endpoint', default='')
  parser.add_argument('--logging_endpoint', default='')
  parser.add_argument('--semi_persist_dir', default='')
  args, _ = parser.parse_known_args(argv)

  # The pool pipes stdout and never reads it: keep everything on stderr.
  os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
  work = os.path.abspath(os.environ.get('SDK_WORKER_BOOT_DIR', 'boot'))
  semi_persist = args.semi_persist_dir or os.path.join(work, 'workers', args.id)
  os.makedirs(semi_persist, exist_ok=True)

  info = _provision_info(args.provision_endpoint, args.id)
  artifact_endpoint = info.artifact_endpoint.url or args.artifact_endpoint
  control = info.control_endpoint.url or args.control_endpoint
  logging_endpoint = info.logging_endpoint.url or args.logging_endpoint
  staged_dir = os.path.join(semi_persist, 'staged')
  names = _fetch_artifacts(artifact_endpoint, args.id, info.dependencies,
                           staged_dir)
  packages = _packages_to_install(staged_dir, names)
  path = [_install(packages, os.path.join(work, 'packages'))] if packages \
      else []

  env = dict(os.environ)
  env.pop('PYTHONPATH', None)
  if path:
    env['PYTHONPATH'] = os.pathsep.join(path)
  env['WORKER_ID'] = args.id
  env['PIPELINE_OPTIONS'] = json_format.MessageToJson(info.pipeline_options)
  env['SEMI_PERSISTENT_DIRECTORY'] = semi_persist
  env['CONTROL_API_SERVICE_DESCRIPTOR'] = _descriptor(control)
  if logging_endpoint:
    env['LOGGING_API_SERVICE_DESCRIPTOR'] = _descriptor(logging_endpoint)
  if info.status_endpoint.url:
    env['STATUS_API_SERVICE_DESCRIPTOR'] = _descriptor(info.status_endpoint.url)
  env['RUNNER_CAPABILITIES'] = ' '.join(info.runner_capabilities)
  _log(f'worker {args.id}: {len(names)} artifacts, starting the SDK harness '
       f'with {json.dumps(path)} on its path')
  os.chdir(semi_persist)
  os.execve(
      sys.executable,
      [sys.executable, '-m', 'apache_beam.runners.worker.sdk_worker_main'], env)


if __name__ == '__main__':
  main()
