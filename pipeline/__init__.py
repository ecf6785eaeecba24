"""Beam + tf.Transform preprocessing: raw tabular data to transformed TFRecords."""

from pipeline import beam_signatures

beam_signatures.install()
