"""Beam + tf.Transform preprocessing: raw tabular data to transformed TFRecords."""
