"""The output directory: built under a temporary name, published at the end.

A reader (a trainer, a person, a scheduler polling for the directory) must
never see a half-written output directory that looks complete. The job writes
into a sibling `DIR.tmp-...` and only a finished run is moved to `DIR`. On a
local disk the move is one atomic rename; on object stores (gs://), where
directories do not exist, files are moved one by one and `manifest.json` is
moved last, so its presence marks a complete directory.

One run at a time writes a directory: the staging name is fixed (see
below), so a second run with --overwrite would delete the first's staging
directory under it and both would fail deep inside Beam. A run holds the
lock on `DIR.lock` (core/dir_lock.py) from its checks to its end and a
second run stops at once, naming the first.
"""

import os
import shutil

from apache_beam.io.filesystems import FileSystems

from core.dir_lock import DirLock
from core.errors import UserError
from core.layout import PreprocessOutput

MANIFEST = PreprocessOutput.MANIFEST


class PublishConflict(UserError):
  """The output directory appeared during the run; the result is kept."""


def _is_local(path: str) -> bool:
  return FileSystems.get_scheme(path) in (None, 'file')


class StagedOutputDir:
  """Owns `final` and its staging sibling for the duration of one run: from
  its construction, which takes the lock and checks what is there, to
  `release()` (or the end of a `with` block)."""

  def __init__(self, final: str, overwrite: bool = False):
    self.final = final.rstrip('/') or final
    if FileSystems.get_scheme(self.final) is None:
      # As the workers of a runner elsewhere must name it: they do not run in
      # the launcher's directory.
      self.final = os.path.abspath(self.final)
    # A fixed staging name, not a random one: tf.Transform bakes the paths of
    # its temporary vocabulary files into the transform graph, so a run-
    # independent name is what makes re-running the same job byte-identical.
    self.staging = self.final + PreprocessOutput.STAGING_SUFFIX
    # The layout's names, under the staging directory.
    self.files = PreprocessOutput(self.staging)
    self._overwrite = overwrite
    self._lock = DirLock(self.final + PreprocessOutput.LOCK_SUFFIX,
                         f'--output-dir {self.final}')
    try:
      if FileSystems.exists(self.final) and not overwrite:
        raise UserError(f'--output-dir {self.final}: already exists; pass '
                        '--overwrite to replace it')
      if FileSystems.exists(self.staging):
        if not overwrite:
          raise UserError(
              f'--output-dir {self.final}: {self.staging} exists, left by a '
              'run that crashed; pass --overwrite to discard it')
        FileSystems.delete([self.staging])
    except BaseException:
      self.release()
      raise

  def __enter__(self) -> 'StagedOutputDir':
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.release()

  def release(self) -> None:
    """Lets another run write the directory; the staging directory, if any
    is left, stays as it is."""
    self._lock.release()

  def path(self, *parts: str) -> str:
    return FileSystems.join(self.staging, *parts)

  def create(self) -> None:
    if _is_local(self.staging):
      parent = os.path.dirname(os.path.abspath(self.staging))
      os.makedirs(parent, exist_ok=True)
    FileSystems.mkdirs(self.staging)

  def discard(self, *parts: str) -> None:
    """Deletes a path inside the staging directory, if it exists.

    The whole local staging directory is first renamed aside: a thread of a
    stopped job that still writes into it then fails to find it, instead of
    making a deletion in progress fail or leaving a new file behind.
    """
    path = self.path(*parts) if parts else self.staging
    if not parts and FileSystems.get_scheme(path) is None:
      aside = f'{path}.discarded-{os.getpid()}'
      try:
        os.rename(path, aside)
      except (FileNotFoundError, NotADirectoryError):
        # Never made (its parent may not even be a directory), or discarded
        # by another thread.
        return
      path = aside
    if FileSystems.exists(path):
      FileSystems.delete([path])

  def publish(self) -> None:
    """Moves the staging directory to its final name, replacing an old one."""
    if _is_local(self.final):
      old = None
      if os.path.exists(self.final):
        if not self._overwrite:
          raise PublishConflict(
              f'--output-dir {self.final}: appeared while the job ran; not '
              f'replaced. The finished result is kept in {self.staging}: '
              'move it into place yourself, or rerun with --overwrite')
        old = f'{self.final}.old'
        if os.path.exists(old):
          shutil.rmtree(old)
        os.rename(self.final, old)
      os.rename(self.staging, self.final)
      if old:
        shutil.rmtree(old, ignore_errors=True)
      return
    if FileSystems.exists(self.final):
      FileSystems.delete([self.final])
    sources = [
        m.path
        for r in FileSystems.match([self.staging + '/**'])
        for m in r.metadata_list
    ]
    sources.sort(key=lambda p: p.endswith('/' + MANIFEST))
    for src in sources:
      dst = self.final + src[len(self.staging):]
      FileSystems.rename([src], [dst])
    self.discard()
