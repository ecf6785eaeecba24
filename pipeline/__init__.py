"""Beam + tf.Transform preprocessing: raw tabular data to transformed TFRecords."""

import sys

# In a Beam worker (Beam is imported before the job's DoFns are unpickled),
# Beam's DoFn signature inspection is remembered from the start, and so are
# the module globals its state cache leaves out of a cached value's weight; a
# command installs both after importing Beam with its start-up noise filtered.
if 'apache_beam' in sys.modules:
  from pipeline import beam_signatures
  from pipeline import beam_state_cache

  beam_signatures.install()
  beam_state_cache.install()
