"""Beam + tf.Transform preprocessing: raw tabular data to transformed TFRecords."""

import sys


def install_beam_memos() -> None:
  """Remembers what Beam computes again on every call: its DoFn signature
  inspection (beam_signatures), the module globals its state cache leaves
  out of a cached value's weight (beam_state_cache) and the compression of
  its pickles (beam_pickle_compression). Idempotent."""
  # pylint: disable=g-import-not-at-top
  from pipeline import beam_pickle_compression
  from pipeline import beam_signatures
  from pipeline import beam_state_cache

  beam_signatures.install()
  beam_state_cache.install()
  beam_pickle_compression.install()


# In a Beam worker (Beam is imported before the job's DoFns are unpickled),
# they are installed from the start; a command installs them after importing
# Beam with its start-up noise filtered.
if 'apache_beam' in sys.modules:
  install_beam_memos()
