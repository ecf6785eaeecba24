"""The wide & deep model, built from the dataset config and transformed metadata.

Nothing here knows a dataset: which transformed features exist and what role
each plays (wide, deep, embedding size) comes from
`DatasetConfig.transformed_features()`, and the number of ids of every
categorical feature comes from the int_domain that tf.Transform recorded in the
transformed schema. A new dataset is a new YAML, never new code here.

Architecture (Cheng et al. 2016, "Wide & Deep Learning for Recommender
Systems"):
  * wide: a linear model over the one-hot encoding of every wide categorical
    id (vocabulary ids, numeric buckets, hashed crosses). A weight per id is
    an embedding of dimension 1, which is how it is implemented: a lookup
    instead of a huge sparse one-hot matmul.
  * deep: embeddings of the categorical ids plus the scaled numerics,
    concatenated into a ReLU MLP ending in the logits.
  * the tables of a part's single-valued categorical features are stacked
    into a few variables (trainer/embedding_table.py): a training step does a
    lookup and an optimizer update per variable instead of per feature, for
    the same model as with a table per feature.
  * the two parts' logits are summed and turned into the output by the head
    (trainer/heads/: a sigmoid for binary labels, a softmax over K logits
    for multiclass, an un-standardized value for regression); both parts are
    trained jointly, each with its own optimizer (FTRL suits the sparse,
    memorising wide part; Adam the dense deep part), as in the paper.
  * a multivalent feature (a list column, the tokens of free text) has any
    number of ids per row, a SparseTensor: the wide part sums its ids'
    weights (a multi-hot linear term), the deep part averages their
    embeddings (a bag of embeddings); a row without ids contributes zeros.
  * `model_type` builds one part alone (wide: a linear model; deep: an MLP)
    for ablations; `deep_buckets` / `deep_crosses` also embed the wide-only
    ids in the deep part.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
from tensorflow.python.autograph.core import config as autograph_config
import tensorflow_transform as tft
import tf_keras as keras

from core.config import DatasetConfig
from core.errors import InputError
from trainer.embedding_table import EmbeddingTable
from trainer.heads import Head
from trainer.hparams import HParams

# AutoGraph's own rules leave the `keras` package unconverted but not
# `tf_keras`, the same Keras 2 code under another name: the functions Keras
# calls inside its traced steps (step and run functions, per-replica
# reductions, metric updates) were rewritten from source on every first
# trace, about 0.5 s of the first epoch on two cores. Keras' top-level step
# functions are still converted (a tf.function's own body always is), so
# steps_per_execution loops keep working. Added the way TensorFlow's
# converter tests add their rules.
if not any(
    isinstance(rule, autograph_config.DoNotConvert) and rule.matches('tf_keras')
    for rule in autograph_config.CONVERSION_RULES):
  autograph_config.CONVERSION_RULES = (autograph_config.DoNotConvert(
      'tf_keras'),) + tuple(autograph_config.CONVERSION_RULES)

WIDE_PREFIX = 'wide_'
DEEP_PREFIX = 'deep_'
# The attributes a compiled model holds its optimizers in: the wide part's
# (WideDeepModel.compile) and Keras' own.
OPTIMIZER_ATTRIBUTES = ('wide_optimizer', 'optimizer')


@dataclasses.dataclass(frozen=True)
class ModelFeature:
  """One model input: a transformed feature with its dtype and role."""

  name: str
  dtype: tf.dtypes.DType
  categorical: bool
  wide: bool
  deep: bool
  num_ids: int = 0  # categorical only: ids are 0 .. num_ids - 1
  embedding_dim: int = 0  # categorical and deep only
  multivalent: bool = False  # any number of ids per row (SparseTensor)


def embedding_dim(num_ids: int, configured: Optional[int], hp: HParams) -> int:
  """The config's embedding_dim, else the rule of thumb scale * n^(1/4).

    The fourth-root rule (as in TensorFlow's feature column guide) grows the
    embedding slowly with the vocabulary, capped so a huge hashed feature does
    not dominate the MLP's input.
    """
  if configured:
    return configured
  return int(
      max(2, min(hp.embedding_max_dim,
                 round(hp.embedding_scale * num_ids**0.25))))


def model_features(config: DatasetConfig, tft_output: tft.TFTransformOutput,
                   hp: HParams) -> List[ModelFeature]:
  """Joins the config's feature roles with the transformed schema.

    A mismatch (a feature the config promises but the transform did not write,
    or a categorical without an id range) means the preprocess output and the
    config disagree; that is reported instead of training a wrong model.
    """
  spec = tft_output.transformed_feature_spec()
  crosses = {c.name for c in config.crosses}
  out = []
  for declared in config.transformed_features():
    f = declared
    if f.kind == 'categorical' and not f.deep:
      f = dataclasses.replace(
          f, deep=hp.deep_crosses if f.name in crosses else hp.deep_buckets)
    # Ablations: one part alone keeps only the features that part uses.
    if hp.model_type == 'wide':
      f = dataclasses.replace(f, deep=False)
    elif hp.model_type == 'deep':
      f = dataclasses.replace(f, wide=False)
    if not (f.wide or f.deep):
      continue
    if f.name not in spec:
      raise InputError(
          f'transformed feature {f.name!r} from the config is not in the '
          'transformed metadata; was the preprocess output written with a '
          'different config?')
    dtype = spec[f.name].dtype
    if f.kind == 'categorical':
      if dtype != tf.int64:
        raise InputError(f'transformed feature {f.name!r} should hold int64 '
                         f'ids, but its dtype is {dtype.name}')
      try:
        n = tft_output.num_buckets_for_transformed_feature(f.name)
      except ValueError as e:
        raise InputError(f'transformed feature {f.name!r}: {e}') from None
      dim = embedding_dim(n, f.embedding_dim, hp) if f.deep else 0
      out.append(
          ModelFeature(
              f.name,
              dtype,
              True,
              f.wide,
              f.deep,
              n,
              dim,
              multivalent=f.multivalent,
          ))
    else:
      out.append(ModelFeature(f.name, tf.float32, False, f.wide, f.deep))
  return out


class Bias(keras.layers.Layer):
  """A trainable bias (one per logit) added to its input.

    Only used when the model has no deep part (whose last Dense layer otherwise
    carries the bias).
    """

  def build(self, input_shape):
    self.bias = self.add_weight(
        name='bias', shape=(input_shape[-1],), initializer='zeros')
    super().build(input_shape)

  def call(self, inputs):
    return inputs + self.bias


class WideDeepModel(keras.Model):
  """A functional model whose wide and deep variables have their own optimizer.

    Built with the functional API (`WideDeepModel(inputs, outputs)`); only
    `train_step` differs from keras.Model: the gradient of the one loss is split
    by variable owner (layer name prefix) and applied by two optimizers. Loss
    scaling and cross-replica gradient aggregation are Keras' own (compute_loss,
    apply_gradients), so distribution strategies work unchanged.

    Its steps and its call run without AutoGraph. They have no data-dependent
    Python control flow, and AutoGraph only exempts the `keras` package, not
    `tf_keras`: converted, every tf_keras function under a step is rewritten
    from its source on the first trace, about 20 s on a 2-core machine before
    the first epoch, and as long again for the serving signatures.
    """

  @tf.autograph.experimental.do_not_convert
  def __call__(self, *args, **kwargs):
    return super().__call__(*args, **kwargs)

  @tf.autograph.experimental.do_not_convert
  def test_step(self, data):
    return super().test_step(data)

  @tf.autograph.experimental.do_not_convert
  def predict_step(self, data):
    return super().predict_step(data)

  def compile(self, wide_optimizer=None, **kwargs):  # pylint: disable=arguments-differ
    super().compile(**kwargs)
    self.wide_optimizer = wide_optimizer

  def split_variables(self) -> Tuple[List[tf.Variable], List[tf.Variable]]:
    wide, deep = [], []
    for layer in self.layers:
      if layer.name.startswith(WIDE_PREFIX):
        wide.extend(layer.trainable_weights)
      else:
        deep.extend(layer.trainable_weights)
    if self.wide_optimizer is None:
      return [], wide + deep
    return wide, deep

  @tf.autograph.experimental.do_not_convert
  def train_step(self, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    wide_vars, deep_vars = self.split_variables()
    with tf.GradientTape() as tape:
      y_pred = self(x, training=True)
      loss = self.compute_loss(x, y, y_pred, sample_weight)
    grads = tape.gradient(loss, wide_vars + deep_vars)
    if wide_vars:
      self.wide_optimizer.apply_gradients(
          zip(grads[:len(wide_vars)], wide_vars))
    if deep_vars:
      self.optimizer.apply_gradients(zip(grads[len(wide_vars):], deep_vars))
    return self.compute_metrics(x, y, y_pred, sample_weight)


class BagEmbedding(keras.layers.Layer):
  """Embeddings of a variable number of ids per row, combined per row.

    Input: an int64 SparseTensor [batch, None] of ids in 0 .. num_ids - 1;
    output: [batch, dim], the sum or mean of the row's embeddings (zeros for a
    row without ids; ids outside the range, e.g. -1, are dropped).
    """

  def __init__(
      self,
      num_ids: int,
      dim: int,
      combiner: str,
      embeddings_initializer='uniform',
      embeddings_regularizer=None,
      **kwargs,
  ):
    super().__init__(**kwargs)
    self.num_ids, self.dim, self.combiner = num_ids, dim, combiner
    self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
    self.embeddings_regularizer = embeddings_regularizer

  def build(self, input_shape):
    self.embeddings = self.add_weight(
        name='embeddings',
        shape=(self.num_ids, self.dim),
        initializer=self.embeddings_initializer,
        regularizer=self.embeddings_regularizer,
    )
    super().build(input_shape)

  def call(self, ids):
    ids = tf.sparse.retain(
        ids, tf.logical_and(ids.values >= 0, ids.values < self.num_ids))
    return tf.nn.safe_embedding_lookup_sparse(
        self.embeddings, ids, combiner=self.combiner)

  def get_config(self):
    return dict(
        super().get_config(),
        num_ids=self.num_ids,
        dim=self.dim,
        combiner=self.combiner,
    )


def _inputs(features: Sequence[ModelFeature]) -> Dict[str, keras.Input]:
  # Transformed features are dense scalars per example, shape [batch], except
  # multivalent ones: SparseTensors [batch, None] of ids.
  return {
      f.name: (
          keras.Input(shape=(None,), dtype=f.dtype, sparse=True, name=f.name) if
          f.multivalent else keras.Input(shape=(), dtype=f.dtype, name=f.name)
      ) for f in features
  }


def _bag_embedding(
    f: ModelFeature,
    inputs,
    dim: int,
    name: str,
    initializer='uniform',
    regularizer=None,
    combiner='mean',
):
  """[batch, dim]: the combined embeddings of a multivalent feature's ids."""
  return BagEmbedding(
      f.num_ids,
      dim,
      combiner,
      embeddings_initializer=initializer,
      embeddings_regularizer=regularizer,
      name=name,
  )(
      inputs[f.name])


def _wide_logit(features, inputs, hp: HParams, units: int):
  terms = []
  single = [
      f for f in features if f.wide and f.categorical and not f.multivalent
  ]
  if single:
    # A weight per id and logit, summed over the features.
    terms.append(
        EmbeddingTable(
            [f.num_ids for f in single], [units] * len(single),
            combiner='sum',
            embeddings_initializer='zeros',
            name=f'{WIDE_PREFIX}weights')([inputs[f.name] for f in single]))
  for f in features:
    if not (f.wide and f.categorical and f.multivalent):
      continue
    # A weight per id and logit; several ids in a row add up (multi-hot).
    terms.append(
        _bag_embedding(
            f,
            inputs,
            units,
            f'{WIDE_PREFIX}{f.name}',
            initializer='zeros',
            combiner='sum',
        ))
  for f in features:
    if f.wide and not f.categorical:
      terms.append(
          keras.layers.Dense(
              units,
              use_bias=False,
              kernel_initializer='zeros',
              name=f'{WIDE_PREFIX}{f.name}',
          )(keras.layers.Reshape(
              (1,), name=f'{WIDE_PREFIX}{f.name}_column')(inputs[f.name])))
  if not terms:
    return None
  return (terms[0] if len(terms) == 1 else keras.layers.Add(
      name=f'{WIDE_PREFIX}logit_sum')(terms))


def _regularizer(hp: HParams):
  return keras.regularizers.L2(hp.deep_l2) if hp.deep_l2 else None


def _deep_logit(features, inputs, hp: HParams, units: int):
  parts = []
  single = [
      f for f in features if f.deep and f.categorical and not f.multivalent
  ]
  embedded = {}
  if single:
    embedded = dict(
        zip((f.name for f in single),
            EmbeddingTable([f.num_ids for f in single],
                           [f.embedding_dim for f in single],
                           embeddings_regularizer=_regularizer(hp),
                           name=f'{DEEP_PREFIX}embeddings')(
                               [inputs[f.name] for f in single])))
  for f in features:
    if not f.deep:
      continue
    if f.name in embedded:
      parts.append(embedded[f.name])
    elif f.categorical:
      parts.append(
          _bag_embedding(
              f,
              inputs,
              f.embedding_dim,
              f'{DEEP_PREFIX}embedding_{f.name}',
              regularizer=_regularizer(hp),
          ))
    else:
      parts.append(
          keras.layers.Reshape(
              (1,), name=f'{DEEP_PREFIX}numeric_{f.name}')(inputs[f.name]))
  if not parts:
    return None
  x = (
      parts[0] if len(parts) == 1 else keras.layers.Concatenate(
          name=f'{DEEP_PREFIX}input')(parts))
  for i, width in enumerate(hp.hidden_units):
    x = keras.layers.Dense(
        width,
        activation='relu',
        kernel_regularizer=_regularizer(hp),
        name=f'{DEEP_PREFIX}hidden_{i}',
    )(
        x)
    if hp.dropout:
      x = keras.layers.Dropout(
          hp.dropout, seed=hp.seed + i, name=f'{DEEP_PREFIX}dropout_{i}')(
              x)
  return keras.layers.Dense(units, name=f'{DEEP_PREFIX}logit')(x)


def build_model(features: Sequence[ModelFeature], hp: HParams,
                head: Head) -> WideDeepModel:
  """The uncompiled wide & deep model: transformed features -> the head's
    output (P(positive), class probabilities or the predicted value)."""
  inputs = _inputs(features)
  wide = _wide_logit(features, inputs, hp, head.units)
  deep = _deep_logit(features, inputs, hp, head.units)
  if wide is None and deep is None:
    raise InputError('the config defines no model features')
  if deep is None:
    logit = Bias(name=f'{WIDE_PREFIX}bias')(wide)
  elif wide is None:
    logit = deep
  else:
    logit = keras.layers.Add(name='logit')([wide, deep])
  return WideDeepModel(
      inputs=inputs, outputs=head.output(logit), name='wide_and_deep')


def learning_rate(base: float, hp: HParams, steps_per_epoch: Optional[int]):
  """A constant rate, or a cosine decay over all of training's steps.

    ('plateau' is a callback, `ReduceOnPlateau`, acting on constant rates.)
    """
  if hp.lr_schedule == 'cosine':
    if not steps_per_epoch:
      raise ValueError('a cosine schedule needs the number of steps per epoch')
    return keras.optimizers.schedules.CosineDecay(
        base, decay_steps=hp.epochs * steps_per_epoch, alpha=hp.lr_min_fraction)
  return base


def make_optimizer(name: str, learning_rate, hp: HParams,
                   wide: bool) -> keras.optimizers.Optimizer:
  """One of the supported optimizers, without XLA.

    Keras optimizers XLA-compile their update step by default; for a model this
    small that compilation costs about 30 s per run on a CPU and buys nothing.
    `learning_rate` is a float or a LearningRateSchedule.
    """
  kwargs = {'jit_compile': False}
  if name == 'ftrl':
    return keras.optimizers.Ftrl(
        learning_rate,
        l1_regularization_strength=hp.wide_l1 if wide else 0.0,
        l2_regularization_strength=hp.wide_l2 if wide else 0.0,
        **kwargs,
    )
  if name == 'adam':
    return keras.optimizers.Adam(learning_rate, **kwargs)
  if name == 'adagrad':
    return keras.optimizers.Adagrad(learning_rate, **kwargs)
  if name == 'rmsprop':
    return keras.optimizers.RMSprop(learning_rate, **kwargs)
  return keras.optimizers.SGD(learning_rate, **kwargs)


def compile_model(model: WideDeepModel,
                  hp: HParams,
                  head: Head,
                  steps_per_epoch: Optional[int] = None) -> WideDeepModel:
  """The head's loss and metrics (early stopping watches one), and the two
    optimizers."""
  has_wide = any(
      l.name.startswith(WIDE_PREFIX) and l.trainable_weights
      for l in model.layers)
  model.compile(
      wide_optimizer=(make_optimizer(
          hp.wide_optimizer,
          learning_rate(hp.wide_learning_rate, hp, steps_per_epoch),
          hp,
          wide=True,
      ) if has_wide else None),
      optimizer=make_optimizer(
          hp.deep_optimizer,
          learning_rate(hp.deep_learning_rate, hp, steps_per_epoch),
          hp,
          wide=False,
      ),
      loss=head.loss(),
      metrics=head.keras_metrics(hp.threshold),
  )
  # The optimizers' slots are created here rather than in the first training
  # step: a tf.function that creates variables while it is first traced is
  # traced a second time, and the train step is the longest trace of the
  # first epoch (about 1 s each on 2 cores). Called inside the strategy's
  # scope, as compile_model is, the slots are distributed like the weights.
  if model.built:
    wide_vars, deep_vars = model.split_variables()
    if wide_vars:
      model.wide_optimizer.build(wide_vars)
    if deep_vars:
      model.optimizer.build(deep_vars)
  return model


class ReduceOnPlateau(keras.callbacks.Callback):
  """Multiplies both optimizers' learning rates by `factor` (down to
    `min_fraction` of their first rate) once the watched metric has not
    improved for `patience` epochs in a row, then waits `patience` epochs
    again (Keras' ReduceLROnPlateau only knows the model's one optimizer)."""

  def __init__(
      self,
      monitor: str = 'val_auc',
      factor: float = 0.5,
      patience: int = 2,
      min_fraction: float = 0.05,
      mode: str = 'max',
  ):
    super().__init__()
    self.monitor, self.factor, self.patience = monitor, factor, patience
    self.min_fraction = min_fraction
    # Compared as "higher is better": a metric to minimise is negated.
    self._sign = 1.0 if mode == 'max' else -1.0
    self._best, self._wait = -float('inf'), 0
    self._base: Dict[int, float] = {}
    self.reductions: List[int] = []

  def _optimizers(self):
    optimizers = (getattr(self.model, a, None) for a in OPTIMIZER_ATTRIBUTES)
    return [o for o in optimizers if o is not None]

  def on_train_begin(self, logs=None):
    self._base = {
        id(o): float(keras.backend.get_value(o.learning_rate))
        for o in self._optimizers()
    }

  def on_epoch_end(self, epoch, logs=None):
    value = (logs or {}).get(self.monitor)
    if value is None:
      return
    value = self._sign * value
    if value > self._best:
      self._best, self._wait = value, 0
      return
    self._wait += 1
    if self._wait < self.patience:
      return
    self._wait = 0
    for o in self._optimizers():
      lr = float(keras.backend.get_value(o.learning_rate))
      floor = self._base[id(o)] * self.min_fraction
      o.learning_rate.assign(max(floor, lr * self.factor))
    self.reductions.append(epoch + 1)
