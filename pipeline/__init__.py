"""Beam + tf.Transform preprocessing: raw tabular data to transformed TFRecords."""

import sys

# In a Beam worker (Beam is imported before the job's DoFns are unpickled),
# Beam's DoFn signature inspection is remembered from the start; a command
# installs it after importing Beam with its start-up noise filtered.
if 'apache_beam' in sys.modules:
  from pipeline import beam_signatures

  beam_signatures.install()
