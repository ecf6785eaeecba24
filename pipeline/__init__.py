"""Beam + tf.Transform preprocessing: raw tabular data to transformed TFRecords."""

import sys


def install_beam_memos() -> None:
  """Remembers what Beam computes again on every call: its DoFn signature
  inspection (beam_signatures), the module globals its state cache leaves
  out of a cached value's weight (beam_state_cache) and the compression of
  its pickles (beam_pickle_compression); and hands a ParDo's unpickled DoFn
  to the operation its worker sets up, instead of pickling it once more
  (beam_dofn_handover). Idempotent."""
  # pylint: disable=g-import-not-at-top
  from pipeline import beam_dofn_handover
  from pipeline import beam_pickle_compression
  from pipeline import beam_signatures
  from pipeline import beam_state_cache

  beam_signatures.install()
  beam_state_cache.install()
  beam_pickle_compression.install()
  beam_dofn_handover.install()


def replace_module_global(module_names, name: str, beams, ours) -> None:
  """Sets global `name` of each module that holds `beams` there to `ours`:
    a module that cannot be imported, or holds something else there
    (`ours` already, or not what this expects), is left as it is."""
  import importlib  # pylint: disable=g-import-not-at-top

  for module_name in module_names:
    try:
      module = importlib.import_module(module_name)
    except ImportError:
      continue
    if getattr(module, name, None) is beams:
      setattr(module, name, ours)


# In a Beam worker (Beam is imported before the job's DoFns are unpickled),
# they are installed from the start; a command installs them after importing
# Beam with its start-up noise filtered.
if 'apache_beam' in sys.modules:
  install_beam_memos()
