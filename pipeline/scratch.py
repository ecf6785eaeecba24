"""A temporary directory of the job's own, so that the job leaves none behind.

Beam makes temporary directories it never removes: a portable run (Flink,
Spark, PortableRunner) gathers the job's dependencies (the `--setup_file`
sdist, the list of the submitting environment's packages) in a
`tempfile.mkdtemp()` of `environments.python_sdk_dependencies` and leaves it
there (about 300 KB per run with an sdist), and a pipeline that is built but
never run keeps the `beam-pipeline-temp*` directory its constructor made.
Every run of the job would add to the system's temporary directory. While
the job is built and run, Python's default temporary directory is one the
job owns; it is removed when the job ends, however it ends.
"""

import contextlib
import shutil
import tempfile
from typing import Iterator


@contextlib.contextmanager
def job_temp_dir(prefix: str) -> Iterator[str]:
  """Makes `tempfile`'s default directory a new one for the `with` body.

  Files a library keeps open or needs after the body must not be made in
  it: the job's own outputs and tf.Transform's temporary files are under the
  output directory, not here.
  """
  path = tempfile.mkdtemp(prefix=prefix)
  previous = tempfile.tempdir
  tempfile.tempdir = path
  try:
    yield path
  finally:
    tempfile.tempdir = previous
    remove(path)


def remove(path: str) -> None:
  """Removes a job's temporary directory; what is already gone is fine."""
  shutil.rmtree(path, ignore_errors=True)
