"""The embeddings of several single-valued categorical features in a few
variables.

A Keras `Embedding` per feature gives the training step a lookup, a gradient
and an optimizer update per feature: with the Adult config's 12 deep
embeddings and 14 wide weight tables, the step's graph had 2,546 ops (traced
for one batch), 1,774 of them the optimizers' per-variable updates, and
tracing it was most of the first epoch. `EmbeddingTable` stacks the
features' tables into a few variables, feature i's `sizes[i]` rows after the
rows of the features before it, and looks up each variable's rows with one
gather: the same values, the same gradients and (Adam, FTRL and Adagrad work
per coordinate) the same updates as a table per feature, in 1,179 ops.

Features of different embedding sizes share a variable as wide as the widest
of them, each using the first dims[i] columns of its rows; the columns beyond
are zeros that are never read, so their gradient is zero and no optimizer
moves them. A variable only takes features at least 3/4 as wide as it, so
the padding stays under a third of what the features use (the Adult config's
12 deep embeddings, of 8 to 32 columns, make 3 variables). A flat variable of
all the features' values instead needs no padding, but its sparse gradient
has an index per value rather than per row.

The blocks are also initialised as separate tables would be: one initializer
per feature, made in the layer's constructor and called in feature order, so
that with the same seed the model starts from the same weights as with a
Keras `Embedding` per feature made in the same order.
"""

from typing import List, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

COMBINERS = ('concat', 'sum')


def _fresh_initializer(identifier):
  """A new initializer object each call (an unseeded one draws its seed on
  its first call and keeps it, so reusing one object would repeat its values
  in every block)."""
  if isinstance(identifier, keras.initializers.Initializer):
    return type(identifier).from_config(identifier.get_config())
  return keras.initializers.get(identifier)


def _groups(dims: Sequence[int]) -> List[Tuple[int, List[int]]]:
  """(width, feature indices) of each variable: the widest remaining feature
  and every remaining feature at least 3/4 as wide, in feature order."""
  left = list(range(len(dims)))
  groups = []
  while left:
    width = max(dims[i] for i in left)
    members = [i for i in left if 4 * dims[i] >= 3 * width]
    groups.append((width, members))
    left = [i for i in left if i not in members]
  return groups


class EmbeddingTable(keras.layers.Layer):
  """Input: a list of int64 id tensors [batch], feature i's ids in
    0 .. sizes[i] - 1. Output: 'concat': a list of [batch, dims[i]]
    embeddings, one per feature; 'sum': [batch, dim], the sum of the
    features' embeddings (all of one dim: the wide part's weights per id).

    An id outside its feature's range (e.g. -1) gets zeros, as a row without
    ids does in a bag of embeddings, instead of another feature's row.
    """

  def __init__(
      self,
      sizes: Sequence[int],
      dims: Sequence[int],
      combiner: str = 'concat',
      embeddings_initializer='uniform',
      embeddings_regularizer=None,
      **kwargs,
  ):
    super().__init__(**kwargs)
    if len(sizes) != len(dims) or not sizes:
      raise ValueError('EmbeddingTable needs one dim per size, and at least '
                       f'one feature: sizes {list(sizes)}, dims {list(dims)}')
    if combiner not in COMBINERS:
      raise ValueError(f'combiner {combiner!r} is not one of {COMBINERS}')
    if combiner == 'sum' and len(set(dims)) != 1:
      raise ValueError(f"combiner 'sum' needs equal dims, got {list(dims)}")
    self.sizes = [int(n) for n in sizes]
    self.dims = [int(d) for d in dims]
    self.combiner = combiner
    self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
    self.embeddings_regularizer = embeddings_regularizer
    self._block_initializers = [
        _fresh_initializer(embeddings_initializer) for _ in self.sizes
    ]
    self._groups = _groups(self.dims)
    # Output column j of the 'concat' combiner (the features' dims side by
    # side, in feature order) is column _columns[j] of the groups' lookups
    # laid side by side, [batch, sum over groups of members * width].
    where = {}
    base = 0
    for width, members in self._groups:
      for q, i in enumerate(members):
        where[i] = base + q * width
      base += len(members) * width
    columns = [where[i] + p for i, d in enumerate(self.dims) for p in range(d)]
    # None when the lookups already are the output, in order, unpadded.
    self._columns = None if columns == list(range(base)) else columns

  def build(self, input_shape):
    # Called in feature order whatever the grouping: each draws its seed on
    # its first call.
    blocks = [
        init(shape=(n, d), dtype=self.dtype)
        for init, n, d in zip(self._block_initializers, self.sizes, self.dims)
    ]
    self.tables = []
    for g, (width, members) in enumerate(self._groups):
      value = tf.concat([
          tf.pad(blocks[i], [[0, 0], [0, width - self.dims[i]]])
          for i in members
      ], 0)
      self.tables.append(
          self.add_weight(
              name=f'embeddings_{g}',
              shape=value.shape,
              initializer=lambda shape, dtype=None, value=value: value,
              regularizer=self.embeddings_regularizer,
          ))
    super().build(input_shape)

  # No data-dependent control flow: AutoGraph's conversion would only add
  # to the first trace. (Keras then sees a wrapper's *args, **kwargs and
  # passes `training`, unused here.)
  @tf.autograph.experimental.do_not_convert
  def call(self, ids, training=None):
    del training
    ids = [tf.reshape(tf.cast(i, tf.int64), [-1]) for i in ids]
    looked_up = []
    for table, (_, members) in zip(self.tables, self._groups):
      group_ids = tf.stack([ids[i] for i in members], axis=1)
      member_sizes = [self.sizes[i] for i in members]
      offsets = tf.constant(
          [sum(member_sizes[:q]) for q in range(len(members))], tf.int64)
      valid = tf.logical_and(group_ids >= 0, group_ids
                             < tf.constant(member_sizes, tf.int64))
      rows = tf.where(valid, group_ids + offsets, tf.zeros_like(group_ids))
      values = tf.gather(table, rows)  # [batch, members, width]
      values *= tf.cast(valid, values.dtype)[:, :, tf.newaxis]
      looked_up.append(values)
    if self.combiner == 'sum':
      return tf.reduce_sum(looked_up[0], axis=1)
    flat = tf.concat(
        [tf.reshape(v, [-1, v.shape[1] * v.shape[2]]) for v in looked_up], 1)
    if self._columns is not None:
      flat = tf.gather(flat, self._columns, axis=1)
    return tf.split(flat, self.dims, axis=1)

  def get_config(self):
    return dict(
        super().get_config(),
        sizes=self.sizes,
        dims=self.dims,
        combiner=self.combiner,
        embeddings_initializer=keras.initializers.serialize(
            self.embeddings_initializer),
        embeddings_regularizer=keras.regularizers.serialize(
            self.embeddings_regularizer)
        if self.embeddings_regularizer else None,
    )
