"""tf.Transform's vocabularies written and counted in fewer stages: the
files the library's own implementations write, byte for byte, and the same
vocabulary sizes in the transformed schema."""

import os
import re

import apache_beam as beam
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform import analyzer_nodes
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.beam import common
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import schema_utils

from pipeline import preprocess
from pipeline import tft_vocabulary_stages

# tf.Transform's operation -> (the library's implementation, this module's).
_IMPLEMENTATIONS = {
    analyzer_nodes.VocabularyOrderAndWrite:
        (tft_vocabulary_stages._LIBRARY_WRITE_IMPL,
         tft_vocabulary_stages._VocabularyOrderAndWriteImpl),
    analyzer_nodes.VocabularyCount:
        (tft_vocabulary_stages._LIBRARY_COUNT_IMPL,
         tft_vocabulary_stages._VocabularyCountImpl),
}  # pylint: disable=protected-access

_TOKENS = ['b', 'a', 'caf\u00e9', 'x y', 'a', 'b', 'a', 'd\ne', 'c', 'c', '']
_ROWS = [{
    's': [t, _TOKENS[(i * 7) % len(_TOKENS)]],
    'i': [i % 5, 10 + i % 3]
} for i, t in enumerate(_TOKENS * 5)]
_METADATA = dataset_metadata.DatasetMetadata(
    schema_utils.schema_from_feature_spec({
        's': tf.io.VarLenFeature(tf.string),
        'i': tf.io.VarLenFeature(tf.int64),
    }))
# Written by this module's one stage; the others keep the library's.
_ONE_STAGE = ['plain', 'frequency', 'shuffled', 'reserved', 'integers', 'empty']
_LIBRARY_WRITES = ['top_k', 'tfrecord']
_COUNTED = ['plain', 'reserved', 'empty', 'frequency', 'integers', 'top_k']


def _preprocessing_fn(inputs):
  s, i = inputs['s'].values, inputs['i'].values
  applied = {
      'plain':
          tft.vocabulary(s, vocab_filename='plain', name='plain'),
      'reserved':
          tft.vocabulary(
              s,
              reserved_tokens=['<pad>', 'a'],
              vocab_filename='reserved',
              name='reserved'),
      'empty':
          tft.vocabulary(
              s, frequency_threshold=1000, vocab_filename='empty',
              name='empty'),
  }
  tft.vocabulary(
      s, store_frequency=True, vocab_filename='frequency', name='frequency')
  tft.vocabulary(
      s, fingerprint_shuffle=True, vocab_filename='shuffled', name='shuffled')
  tft.vocabulary(
      i, frequency_threshold=2, vocab_filename='integers', name='integers')
  tft.vocabulary(s, top_k=3, vocab_filename='top_k', name='top_k')
  tft.vocabulary(
      s,
      file_format='tfrecord_gzip',
      vocab_filename='tfrecord',
      name='tfrecord')
  outputs = {
      f'{name}_ids': tft.apply_vocabulary(s, path)
      for name, path in applied.items()
  }
  # The counted sizes, as the graph holds them.
  sizes = tf.stack(
      [tft.experimental.get_vocabulary_size_by_name(name) for name in _COUNTED])
  outputs['sizes'] = tf.tile(sizes[None], [inputs['s'].dense_shape[0], 1])
  return outputs


def _registered(operation):
  return common._PTRANSFORM_BY_OPERATION_DEF_SUBCLASS[operation]  # pylint: disable=protected-access


def _analyze(which: int, out: str):
  """The transform_fn analyzed with the library's implementations (0) or
  this module's (1): its assets' bytes, its transformed schema and the
  pipeline's transform names."""
  tags = {}
  for operation, implementations in _IMPLEMENTATIONS.items():
    wrapper = _registered(operation)
    tags[operation] = dict(wrapper._ptransform_by_tag)  # pylint: disable=protected-access
    for tag in tags[operation]:
      wrapper._ptransform_by_tag[tag] = implementations[which]  # pylint: disable=protected-access
  try:
    with beam.Pipeline() as p:
      with preprocess.tft_context(temp_dir=os.path.join(out, 'tmp')):
        transform_fn = ((p | beam.Create(_ROWS), _METADATA)
                        | tft_beam.AnalyzeDataset(_preprocessing_fn))
        _ = transform_fn | tft_beam.WriteTransformFn(os.path.join(out, 'tf'))
      names = [
          t.unique_name
          for t in p.to_runner_api().components.transforms.values()
      ]
  finally:
    for operation, by_tag in tags.items():
      _registered(operation)._ptransform_by_tag = by_tag  # pylint: disable=protected-access
  output = tft.TFTransformOutput(os.path.join(out, 'tf'))
  raw = {
      name: tf.sparse.from_dense(tf.constant([value], dtype=dtype))
      for name, value, dtype in (('s', ['a'], tf.string), ('i', [1], tf.int64))
  }
  sizes = output.transform_features_layer()(raw)['sizes'].numpy()[0].tolist()
  assets = os.path.join(out, 'tf', 'transform_fn', 'assets')
  files = {}
  for name in sorted(os.listdir(assets)):
    with open(os.path.join(assets, name), 'rb') as f:
      files[name] = f.read()
  return files, (output.transformed_metadata.schema, sizes), names


@pytest.fixture(scope='module')
def both(tmp_path_factory):
  return (_analyze(0, str(tmp_path_factory.mktemp('library'))),
          _analyze(1, str(tmp_path_factory.mktemp('ours'))))


def test_installed_and_idempotent():
  tft_vocabulary_stages.install()
  tft_vocabulary_stages.install()
  for operation, (_, ours) in _IMPLEMENTATIONS.items():
    for tag in common.EnvironmentTags:
      assert _registered(operation).get_ptransform(tag)[0] is ours


def test_every_vocabulary_file_is_the_librarys(both):
  (library, _, _), (ours, _, _) = both
  assert sorted(library) == sorted(ours) == sorted(
      _ONE_STAGE + ['top_k', 'tfrecord.tfrecord.gz'])
  for name in library:
    assert ours[name] == library[name], name


def test_the_sizes_are_the_librarys(both):
  (_, library, _), (_, ours, _) = both
  assert ours == library
  # 5 tokens; 5 counted and 2 reserved (tf.Transform counts 'a' in both);
  # tf.Transform's one dummy token (a size of at least 1) for a vocabulary
  # left empty; 5 tokens; the integers seen at least twice (all 8); the top 3.
  assert ours[1] == [5, 7, 1, 5, 8, 3]
  assert {
      f.name: f.int_domain.max for f in ours[0].feature if f.name != 'sizes'
  } == {
      'plain_ids': 4,
      'reserved_ids': 5,
      'empty_ids': 0
  }


def test_the_files_hold_what_the_options_ask_for(both):
  _, (ours, _, _) = both
  plain = ours['plain'].split(b'\n')
  assert plain[-1] == b''  # each line ends in a newline
  # Most frequent first; the empty token and the one holding a newline are
  # left out; ties in reverse order of their bytes.
  assert plain[:-1][:3] == [b'a', b'c', b'b']
  assert set(plain[:-1]) == {b'a', b'b', b'c', 'caf\u00e9'.encode(), b'x y'}
  assert re.fullmatch(rb'\d+ a', ours['frequency'].split(b'\n')[0])
  assert ours['reserved'].split(b'\n')[:2] == [b'<pad>', b'a']
  assert ours['integers'].split(b'\n')[:-1] and all(
      line.isdigit() for line in ours['integers'].split(b'\n')[:-1])
  # Nothing left: tf.Transform's one dummy token.
  assert len(ours['empty'].split(b'\n')[:-1]) == 1
  assert sorted(ours['shuffled'].split(b'\n')) == sorted(plain)
  assert ours['shuffled'] != ours['plain']


def test_no_beam_file_sink_or_global_combine_for_a_vocabulary(both):
  (_, _, library_names), (_, _, names) = both
  assert len(names) < len(library_names) * 0.7
  assert [n for n in library_names if '/CombineGlobally(CountCombineFn)' in n]
  assert not [n for n in names if '/CombineGlobally(CountCombineFn)' in n]

  def sinks(transform_names, vocabulary):
    return [
        n for n in transform_names
        if f'VocabularyOrderAndWrite[{vocabulary}]' in n and '/WriteTo' in n
    ]

  for vocabulary in _ONE_STAGE:
    assert sinks(library_names, vocabulary), vocabulary
    assert not sinks(names, vocabulary), vocabulary
  for vocabulary in _LIBRARY_WRITES:
    assert sinks(names, vocabulary), vocabulary


def test_the_vocabularies_stages_start_from_one_impulse(both):
  """So that the runner can fuse them all into one stage: one impulse for
  the files and counts this module writes, none of their own."""
  _, (_, _, names) = both
  assert len([n for n in names if n.endswith('/Start')]) == 1, names
  assert not [
      n for n in names if '/Prepare' in n and
      ('VocabularyCount' in n or any(f'[{v}]' in n for v in _ONE_STAGE))
  ]
