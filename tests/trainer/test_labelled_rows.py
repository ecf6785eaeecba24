"""The labelled raw rows trainer.push scores: every record read, each
unusable one counted by reason, an unreadable file named."""

import pytest
import tensorflow as tf

from core.config import load_config
from core.errors import InputError
from tests.conftest import TOY_CONFIG
from trainer import labelled_rows


def _example(height, outcome=None) -> bytes:
  feature = {
      'height': tf.train.Feature(float_list=tf.train.FloatList(value=[height]))
  }
  if outcome is not None:
    feature['outcome'] = tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[outcome.encode()]))
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


def _write(path, records, gzip=True):
  options = tf.io.TFRecordOptions(compression_type='GZIP' if gzip else '')
  with tf.io.TFRecordWriter(str(path), options) as writer:
    for record in records:
      writer.write(record)


def test_every_record_is_read_in_order_and_unusable_ones_counted(tmp_path):
  # More records than one read batch, over two files, one not compressed.
  first = [_example(float(i), 'yes.' if i % 2 else 'no') for i in range(2500)]
  second = [_example(1.0), _example(2.0, 'maybe'), _example(3.0, 'yes')]
  _write(tmp_path / 'a.tfrecord.gz', first)
  _write(tmp_path / 'b.tfrecord', second, gzip=False)

  rows = labelled_rows.from_files(
      load_config(TOY_CONFIG), str(tmp_path / '*.tfrecord*'))

  assert len(rows) == 2501
  assert rows.examples[:2500] == first and rows.examples[-1] == second[2]
  assert rows.labels[:3] == ['no', 'yes', 'no'] and rows.labels[-1] == 'yes'
  assert rows.skipped == {
      labelled_rows.NO_LABEL: 1,
      labelled_rows.UNKNOWN_CLASS: 1
  }


def test_a_file_that_is_not_tfrecords_is_named(tmp_path):
  (tmp_path / 'rows.tfrecord.gz').write_bytes(b'height,outcome\n1.0,yes\n')
  with pytest.raises(InputError, match=r'rows\.tfrecord\.gz: not a TFRecord'):
    labelled_rows.from_files(
        load_config(TOY_CONFIG), str(tmp_path / '*.tfrecord.gz'))
