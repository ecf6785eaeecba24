"""EmbeddingTable: several features' embeddings in a few variables, the same
model as a Keras Embedding per feature."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from trainer.embedding_table import EmbeddingTable

SIZES = [5, 7, 3, 11]
DIMS = [4, 3, 2, 4]  # 4, 3 and 4 share a variable 4 wide; 2 one of its own


def _ids(rows=64, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, n, rows).astype('int64') for n in SIZES]


def _separate(dims=None):
  inputs = [keras.Input(shape=(), dtype=tf.int64) for _ in SIZES]
  layers = [keras.layers.Embedding(n, d) for n, d in zip(SIZES, dims or DIMS)]
  outputs = [layer(x) for layer, x in zip(layers, inputs)]
  return keras.Model(inputs, outputs), layers


def _shared(combiner='concat', dims=None, initializer='uniform'):
  inputs = [keras.Input(shape=(), dtype=tf.int64) for _ in SIZES]
  table = EmbeddingTable(
      SIZES,
      dims or DIMS,
      combiner=combiner,
      embeddings_initializer=initializer)
  return keras.Model(inputs, table(inputs)), table


def _blocks(table):
  """Feature i's [size, dim] weights, read back out of the table's variables."""
  out = {}
  for variable, (width, members) in zip(table.tables, table._groups):  # pylint: disable=protected-access
    del width
    value, start = variable.numpy(), 0
    for i in members:
      out[i] = value[start:start + SIZES[i], :table.dims[i]]
      start += SIZES[i]
  return [out[i] for i in range(len(SIZES))]


def test_features_of_similar_width_share_a_variable():
  _, table = _shared()
  assert [v.shape.as_list() for v in table.tables] == [[5 + 7 + 11, 4], [3, 2]]
  assert [g for _, g in table._groups] == [[0, 1, 3], [2]]  # pylint: disable=protected-access


def test_starts_from_the_weights_of_an_embedding_per_feature():
  keras.utils.set_random_seed(3)
  _, layers = _separate()
  keras.utils.set_random_seed(3)
  _, table = _shared()
  for block, layer in zip(_blocks(table), layers):
    np.testing.assert_array_equal(block, layer.get_weights()[0])
  # The padding columns start (and stay, see below) at zero.
  assert not table.tables[0].numpy()[5:12, 3:].any()


@pytest.mark.parametrize(
    'dims',
    [
        DIMS,
        [4, 4, 4, 4],  # one variable, no padding
        [4, 3, 4, 4],  # one variable, padded
        [2, 8, 3, 16],  # a variable each
    ])
def test_looks_up_what_an_embedding_per_feature_does(dims):
  separate, layers = _separate(dims)
  shared, table = _shared(dims=dims)
  for block, layer in zip(_blocks(table), layers):
    layer.set_weights([block])
  ids = _ids()
  for got, want in zip(shared(ids), separate(ids)):
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_sum_combiner_adds_the_features_weights():
  shared, table = _shared('sum', dims=[2] * len(SIZES), initializer='normal')
  ids = _ids()
  want = sum(block[i] for block, i in zip(_blocks(table), ids))
  np.testing.assert_allclose(shared(ids).numpy(), want, rtol=1e-6)


def test_trains_like_an_embedding_per_feature():
  """Adam works per coordinate: the same gradients give the same weights, and
    the padding columns (never read) get no gradient and stay at zero."""
  keras.utils.set_random_seed(5)
  separate, layers = _separate()
  keras.utils.set_random_seed(5)
  shared, table = _shared()
  ids = _ids(rows=256, seed=1)
  target = np.random.default_rng(2).normal(size=(256, sum(DIMS)))

  def fit(model):
    wrapped = keras.Model(model.inputs,
                          keras.layers.Concatenate()(model.outputs))
    wrapped.compile(
        optimizer=keras.optimizers.Adam(0.05, jit_compile=False), loss='mse')
    wrapped.fit(ids, target, batch_size=32, epochs=2, verbose=0, shuffle=False)

  fit(separate)
  fit(shared)
  for block, layer in zip(_blocks(table), layers):
    np.testing.assert_allclose(block, layer.get_weights()[0], atol=1e-6)
  assert not table.tables[0].numpy()[5:12, 3:].any()


def test_ids_out_of_range_read_zeros_not_a_neighbours_row():
  shared, _ = _shared(initializer='ones')
  ids = [
      np.array([-1, 0]),
      np.array([7, 6]),
      np.array([0, 3]),
      np.array([2, 2])
  ]
  out = shared(ids)
  np.testing.assert_array_equal(out[0].numpy(), [[0] * 4, [1] * 4])
  np.testing.assert_array_equal(out[1].numpy(), [[0] * 3, [1] * 3])
  np.testing.assert_array_equal(out[2].numpy(), [[1] * 2, [0] * 2])
  np.testing.assert_array_equal(out[3].numpy(), [[1] * 4, [1] * 4])


@pytest.mark.parametrize(
    'kwargs, message',
    [
        ({
            'sizes': [3, 4],
            'dims': [2]
        }, 'one dim per size'),
        ({
            'sizes': [],
            'dims': []
        }, 'at least one feature'),
        ({
            'sizes': [3],
            'dims': [2],
            'combiner': 'max'
        }, "'max' is not one of"),
        ({
            'sizes': [3, 4],
            'dims': [2, 3],
            'combiner': 'sum'
        }, 'needs equal dims'),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs, message):
  with pytest.raises(ValueError, match=message):
    EmbeddingTable(**kwargs)
