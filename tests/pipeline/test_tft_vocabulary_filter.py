"""tf.Transform's vocabulary token filter, installed in fewer ops, keeps and
drops exactly the tokens the library's own filter does."""

import os
import tempfile

import pytest
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform import analyzers
from tensorflow_transform import impl_helper
from tensorflow_transform import tf_utils

from pipeline import tft_vocabulary_filter

# The library's own function (another test module may have installed ours).
_LIBRARY = getattr(tf_utils._make_regex_filter_fn, 'tft_make_regex_filter_fn',
                   tf_utils._make_regex_filter_fn)
tft_vocabulary_filter.install()
_REGEX = analyzers.get_vocab_newline_characters_regex(tf.string, 'text')

_TOKENS = [
    'a', '', 'b\nc', 'd', ' ', '\r', 'e\r\n', 'a', 'caf\u00e9', '\n', 'x y',
    '\u2028', 'z'
]


def _filtered(make, tokens, *others):
  x = tf.constant(tokens, dtype=tf.string)
  keep = make(x, _REGEX)
  return [keep(t).numpy().tolist() for t in (x,) + others]


def test_installed_and_idempotent():
  installed = tf_utils._make_regex_filter_fn
  assert installed is not _LIBRARY
  tft_vocabulary_filter.install()
  assert tf_utils._make_regex_filter_fn is installed


@pytest.mark.parametrize('tokens', [_TOKENS, [], ['', '\n'], ['only']])
def test_keeps_what_the_library_keeps(tokens):
  weights = tf.range(len(tokens), dtype=tf.float32)
  ids = tf.range(len(tokens), dtype=tf.int64)
  ours = _filtered(tf_utils._make_regex_filter_fn, tokens, weights, ids)
  library = _filtered(_LIBRARY, tokens, weights, ids)
  assert ours == library
  if tokens == _TOKENS:
    # Empty tokens and those with \n or \r go; the rest keep their order.
    assert ours[0] == [
        t.encode()
        for t in ('a', 'd', ' ', 'a', 'caf\u00e9', 'x y', '\u2028', 'z')
    ]
    assert ours[1] == [0.0, 3.0, 4.0, 7.0, 8.0, 10.0, 11.0, 12.0]


def test_no_regex_and_non_string_input_behave_as_the_library():
  values = tf.constant([1, 2, 3])
  assert tf_utils._make_regex_filter_fn(values, None)(values) is values
  with pytest.raises(ValueError, match='only possible with string input'):
    tf_utils._make_regex_filter_fn(values, _REGEX)


def test_vocabulary_trace_has_no_boolean_masks():
  """The ops tf.Transform adds for a text vocabulary of strings: one regex
  match, one `where` and a gather per filtered tensor."""

  def preprocessing_fn(inputs):
    tokens = tf.strings.strip(inputs['s'].values)
    tft.vocabulary(tokens, weights=tf.ones_like(tokens, dtype=tf.float32))
    return {'s': tokens}

  specs = {'s': tf.SparseTensorSpec([None, None], tf.string)}
  with tempfile.TemporaryDirectory() as tmp:
    graph, _, _ = impl_helper.trace_preprocessing_function(
        preprocessing_fn, specs, False, os.path.join(tmp, 'base'))
  types = [op.type for op in graph.get_operations()]
  assert not [
      op.name for op in graph.get_operations() if 'boolean_mask' in op.name
  ]
  assert types.count('StaticRegexFullMatch') == 1
  assert types.count('Where') == 1
  assert types.count('GatherV2') == 2
