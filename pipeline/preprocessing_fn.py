"""The tf.Transform preprocessing_fn, built from the dataset config.

This graph is the single definition of feature engineering. The Beam job
analyzes it on the train split and applies it to every split; the exported
model embeds the very same graph in its serving signatures. So anything that
must behave identically at training and serving time (trimming stray spaces,
treating `?` as missing, imputing, scaling, bucketing, vocabulary lookup,
hashing crosses) is done here, in TensorFlow ops, and not in Python.
"""

import contextlib
import functools
import math
from typing import Any, Callable, Dict

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform import analyzers as tft_analyzers
from tensorflow_transform import schema_inference

from core.config import BINARY
from core.config import BUCKET_SUFFIX
from core.config import COS_SUFFIX
from core.config import DatasetConfig
from core.config import MULTICLASS
from core.config import NumericFeature
from core.config import SIN_SUFFIX
from core.config import TIMESTAMP_PARTS
from core.config import TimestampFeature
from pipeline import tft_vocabulary_filter

_CROSS_JOIN = '\x1f'
_SECONDS_PER_DAY = 86400
# Characters that separate words in free text: anything but letters, digits
# and the underscore (Unicode-aware).
_TOKEN_SEPARATORS = r'[^\w]+'


def _values(x):
  """A SparseTensor's values, or the dense tensor itself."""
  return x.values if isinstance(x, tf.SparseTensor) else x


def _dense_column(x, default) -> tf.Tensor:
  """[batch] tensor from a raw feature, `default` where the value is absent."""
  if isinstance(x, tf.SparseTensor):
    x = tf.sparse.to_dense(
        tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]),
        default_value=default)
    return tf.reshape(x, [-1])
  x = tf.convert_to_tensor(x)
  return tf.reshape(x, [-1]) if x.shape.rank != 1 else x


def clean_strings(x, config: DatasetConfig) -> tf.Tensor:
  """Trimmed strings, with missing tokens mapped to the missing category."""
  s = tf.strings.strip(_dense_column(x, ''))
  missing = tf.zeros_like(s, dtype=tf.bool)
  for token in config.missing_values:
    missing = tf.logical_or(missing, tf.equal(s, token))
  return tf.where(missing, tf.constant(config.missing_category), s)


def _zero_if_nan(x: tf.Tensor) -> tf.Tensor:
  return tf.where(tf.math.is_nan(x), tf.zeros_like(x), x)


def _signed_log1p(x: tf.Tensor) -> tf.Tensor:
  # Signed so that a negative value at serving time cannot produce NaN.
  return tf.sign(x) * tf.math.log1p(tf.abs(x))


def _present_values(value: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
  """What tf.boolean_mask returns for a [batch] tensor, in a few ops: the
  graph is traced five times per job and serves every request."""
  return tf.gather(value, tf.reshape(tf.where(keep), [-1]))


def _mean_and_var(x: tf.Tensor, name: str):
  """tft.mean and tft.var of `x` from one analyzer, as tft.scale_to_z_score
  computes them: the two public analyzers each run this same combiner, so
  asking for both separately doubles its ops in a graph traced five times
  per job, without changing a value."""
  with tf.compat.v1.name_scope(name):
    return tft_analyzers._mean_and_var(x)  # pylint: disable=protected-access


def _min_and_max(x: tf.Tensor, name: str):
  """tft.min and tft.max of `x` from one analyzer, as tft.scale_to_0_1
  computes them (the same reasoning as _mean_and_var)."""
  with tf.compat.v1.name_scope(name):
    return tft_analyzers._min_and_max(x)  # pylint: disable=protected-access


def _divide(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
  """`x / y`, correctly rounded wherever the graph runs.

  Once analyzed, `y` is a constant, and Grappler's constant folding turns a
  division by a constant into a multiplication by its reciprocal, which
  differs in the last bit for some values. Whether it does depends on how
  the graph is run (a TF1 session does; the analysis's TF2 functions did
  not), so Beam, the trainer and serving could each see other values.
  DivNoNan is not among the divisions that rewrite takes, and is exact
  where `y` is not 0 (the callers keep those results only).
  """
  return tf.math.divide_no_nan(x, y)


def _numeric(x, spec: NumericFeature, outputs: Dict[str, tf.Tensor]) -> None:
  """Imputed, optionally log1p'd, then scaled and/or bucketized values.

  Every statistic (the imputation mean, the z-score's mean and variance, the
  min and max, the bucket boundaries) comes from the values present in train,
  so that all of them are computed in one analysis pass: a statistic of the
  imputed column would wait for the imputation mean, and that second pass
  costs the job a whole tf.Transform phase. A missing value is filled after
  the analysis: with the mean it scales to 0, as an average value should.
  """
  if isinstance(x, tf.SparseTensor):
    x = tf.SparseTensor(x.indices, tf.cast(x.values, tf.float32), x.dense_shape)
  # Absent values and NaN (how Parquet and serving clients spell missing)
  # are both missing: an absent value reads as NaN.
  value = tf.cast(_dense_column(x, math.nan), tf.float32)
  missing = tf.math.is_nan(value)
  observed = _present_values(value, tf.logical_not(missing))
  # What the scaler and the buckets see of the present values.
  scaled = _signed_log1p(observed) if spec.log1p else observed
  zscore = None
  if spec.scale == 'zscore':
    mean, variance = _mean_and_var(scaled, spec.name + '_zscore')
    # NaN when train has no value at all: 0 then.
    zscore = _zero_if_nan(mean), tf.sqrt(variance)
  if spec.impute == 'mean':
    # The z-score's mean when it is the mean of the same values.
    fill = (
        zscore[0] if zscore is not None and not spec.log1p else _zero_if_nan(
            tft.mean(observed, name=spec.name + '_impute_mean')))
  else:
    fill = tf.constant(0.0)
  value = tf.where(missing, fill, value)
  if spec.log1p:
    value = _signed_log1p(value)
  if zscore is not None:
    # What tft.scale_to_z_score computes, with the statistics of `scaled`
    # applied to `value`; a constant or empty column is only centred.
    mean, std = zscore
    centred = value - mean
    outputs[spec.name] = tf.where(std > 0, _divide(centred, std), centred)
  elif spec.scale == 'minmax':
    # What tft.scale_to_0_1 computes, likewise: a sigmoid when train has a
    # single value (or none), so the output stays increasing and in (0, 1).
    low, high = _min_and_max(scaled, spec.name + '_min_and_max')
    outputs[spec.name] = tf.where(low < high, _divide(value - low, high - low),
                                  tf.math.sigmoid(value))
  elif not spec.buckets:
    outputs[spec.name] = value
  if spec.buckets:
    # tft.bucketize's quantiles (and its default epsilon) of `scaled`.
    boundaries = tft.quantiles(
        scaled,
        spec.buckets,
        epsilon=min(1.0 / spec.buckets, 0.01),
        name=spec.name + BUCKET_SUFFIX)
    outputs[spec.name + BUCKET_SUFFIX] = tft.apply_buckets(value, boundaries)


def _categorical(strings, spec) -> tf.Tensor:
  """Ids of strings (a dense column or a SparseTensor of several per row)
  from a vocabulary computed on train, or from hashing."""
  if not spec.vocabulary:
    return _hash_ids(strings, spec.hash_buckets)
  with tf.name_scope(spec.name):
    vocabulary = tft.vocabulary(
        strings,
        # A weight of 1 per token gives the counts, order and file of the
        # unweighted vocabulary, but tf.Transform (1.16) reduces a batch to
        # its distinct tokens in the graph only for a weighted one: unweighted,
        # every token of every row is an element of its own in the Beam job
        # (800,000 per column for a million rows) on its way to a per-token
        # count.
        weights=tf.ones_like(_values(strings), dtype=tf.float32),
        top_k=spec.top_k,
        # Thresholds of 0 and 1 keep every token; TFT wants None for that.
        frequency_threshold=(spec.frequency_threshold
                             if spec.frequency_threshold > 1 else None),
        vocab_filename=spec.name)
    return tft.apply_vocabulary(
        strings,
        vocabulary,
        num_oov_buckets=spec.oov_buckets,
        lookup_fn=functools.partial(
            _lookup_with_oov_buckets, oov_buckets=spec.oov_buckets))


def _lookup_with_oov_buckets(strings, vocabulary_path, oov_buckets: int):
  """(ids, number of ids) of strings in a vocabulary file: a token's line,
  or for a token not in it, the vocabulary's size plus its hash bucket.

  The ids of `tf.lookup.StaticVocabularyTable`, which tf.Transform's own
  lookup with OOV buckets uses, from one hash table: that class is a table
  resource of its own around an inner hash table, and tf.Transform saves
  every resource its trace creates, so the transform graph held two tables
  per vocabulary and every SavedModel embedding it restored both, each with
  its own functions (Adult's export: 169 functions, 89 with one table each).
  """
  with contextlib.ExitStack() as scope:
    if tf.inside_function() and not tf.is_symbolic_tensor(vocabulary_path):
      # The final graph, with the vocabulary's path known: the table is made
      # once, as tf.Transform makes its own, not on every call.
      scope.enter_context(tf.init_scope())
    table = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            vocabulary_path,
            key_dtype=tf.string,
            key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
            value_dtype=tf.int64,
            value_index=tf.lookup.TextFileIndex.LINE_NUMBER),
        default_value=-1)
  values = _values(strings)
  size = table.size()
  ids = table.lookup(values)
  ids = tf.where(
      tf.not_equal(ids, -1), ids,
      tf.strings.to_hash_bucket_fast(values, oov_buckets) + size)
  if isinstance(strings, tf.SparseTensor):
    ids = tf.SparseTensor(strings.indices, ids, strings.dense_shape)
  return ids, size + oov_buckets


def _hash_ids(strings, buckets: int):
  ids = tft.hash_strings(strings, buckets)
  _set_id_range(ids, buckets)
  return ids


def _set_id_range(ids, num_ids: int) -> None:
  """Records ids 0 .. num_ids-1 in the transformed schema, as the vocabulary
  and bucket mappers do, so the trainer can size its one-hot and embedding
  layers. For a SparseTensor the range is that of its values."""
  schema_inference.set_tensor_schema_override(
      _values(ids), tf.constant(0, tf.int64),
      tf.constant(num_ids - 1, tf.int64))


def _list_strings(x: tf.SparseTensor, config: DatasetConfig) -> tf.SparseTensor:
  """The values of a list column, trimmed, with missing tokens dropped."""
  values = tf.strings.strip(x.values)
  keep = tf.ones_like(values, tf.bool)
  for token in config.missing_values:
    keep = tf.logical_and(keep, tf.not_equal(values, token))
  return tf.sparse.retain(
      tf.SparseTensor(x.indices, values, x.dense_shape), keep)


def _tokens(x) -> tf.SparseTensor:
  """Free text -> [batch, None] lower-cased word tokens."""
  text = tf.strings.lower(_dense_column(x, ''), encoding='utf-8')
  text = tf.strings.regex_replace(text, _TOKEN_SEPARATORS, ' ')
  tokens = tf.strings.split(tf.strings.strip(text), sep=' ')
  tokens = tf.ragged.boolean_mask(tokens, tf.not_equal(tokens, ''))
  return tokens.to_sparse()


def _boolean(x) -> tf.Tensor:
  """0 false, 1 true, 2 missing."""
  value = tf.cast(_dense_column(x, tf.constant(-1, tf.int64)), tf.int64)
  ids = tf.where(value < 0, tf.constant(2, tf.int64), value)
  _set_id_range(ids, 3)
  return ids


def _civil_month(days: tf.Tensor) -> tf.Tensor:
  """Month 1..12 of a day count since 1970-01-01 (proleptic Gregorian).

  H. Hinnant's days-to-civil algorithm in integer tensor ops, so the same
  graph computes it in the Beam job and at serving time.
  """
  z = days + 719468
  era = tf.math.floordiv(z, 146097)
  doe = z - era * 146097
  yoe = tf.math.floordiv(
      doe - tf.math.floordiv(doe, 1460) + tf.math.floordiv(doe, 36524) -
      tf.math.floordiv(doe, 146096), 365)
  doy = doe - (365 * yoe + tf.math.floordiv(yoe, 4) -
               tf.math.floordiv(yoe, 100))
  mp = tf.math.floordiv(5 * doy + 2, 153)
  return tf.where(mp < 10, mp + 3, mp - 9)


def _timestamp(x, spec: TimestampFeature, outputs) -> None:
  """Calendar part ids (n = missing) and their sine/cosine (0 when missing)."""
  if isinstance(x, tf.SparseTensor):
    present = _dense_column(
        tf.SparseTensor(x.indices, tf.ones_like(x.values, tf.bool),
                        x.dense_shape), False)
  else:
    present = tf.ones_like(_dense_column(x, 0), tf.bool)
  seconds = tf.cast(_dense_column(x, tf.constant(0, tf.int64)), tf.int64)
  days = tf.math.floordiv(seconds, _SECONDS_PER_DAY)
  parts = {
      'hour':
          tf.math.floordiv(tf.math.floormod(seconds, _SECONDS_PER_DAY), 3600),
      # 1970-01-01 was a Thursday; Monday is 0.
      'day_of_week':
          tf.math.floormod(days + 3, 7),
      'month':
          _civil_month(days) - 1,
  }
  for part in spec.parts:
    n = TIMESTAMP_PARTS[part]
    name = spec.part_name(part)
    ids = tf.where(present, parts[part], tf.constant(n, tf.int64))
    _set_id_range(ids, n + 1)
    outputs[name] = ids
    if spec.cyclical:
      angle = tf.cast(parts[part], tf.float32) * (2.0 * math.pi / n)
      zero = tf.zeros_like(angle)
      outputs[name + SIN_SUFFIX] = tf.where(present, tf.sin(angle), zero)
      outputs[name + COS_SUFFIX] = tf.where(present, tf.cos(angle), zero)


def label_transform(x, config: DatasetConfig) -> tf.Tensor:
  """The training target.

  binary: 1 for the positive class, 0 otherwise; multiclass: the index of the
  class in label.classes; regression: the value as float32 (signed log1p of
  it with log_target).
  """
  label = config.label
  if label.task in (BINARY, MULTICLASS):
    text = tf.strings.strip(_dense_column(x, ''))
    if label.task == BINARY:
      return tf.cast(tf.equal(text, label.positive), tf.int64)
    matches = tf.equal(
        tf.expand_dims(text, 1),
        tf.constant(list(label.classes))[tf.newaxis, :])
    return tf.argmax(tf.cast(matches, tf.int64), axis=1)
  value = tf.cast(_dense_column(x, 0.0), tf.float32)
  if label.log_target:
    value = tf.sign(value) * tf.math.log1p(tf.abs(value))
  return value


def make_preprocessing_fn(
    config: DatasetConfig
) -> Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]:
  """Returns the preprocessing_fn for `config`.

  Inputs are the raw features (and the label when present), each a
  SparseTensor as parsed from variable-length features: [batch, 1] for a
  single value, [batch, None] for a list column.
  Outputs are dense [batch] tensors (float32 for scaled numerics and cyclical
  timestamp parts; int64 ids for buckets, vocabularies, booleans, timestamp
  parts and hashed crosses), [batch, None] int64 SparseTensors of ids for list
  columns and free text, and the label (int64 for classification, float32
  for regression).
  """

  def preprocessing_fn(inputs):
    # Here rather than at import: wherever tf.Transform traces this function
    # (a worker process of a portable runner too), it has just called it.
    tft_vocabulary_filter.install()
    outputs: Dict[str, Any] = {}
    for numeric in config.numeric:
      _numeric(inputs[numeric.name], numeric, outputs)
    crossable = {}
    lists = {c.name for c in config.columns if c.is_list}
    for categorical in config.categorical:
      if categorical.name in lists:
        outputs[categorical.name] = _categorical(
            _list_strings(inputs[categorical.name], config), categorical)
        continue
      strings = clean_strings(inputs[categorical.name], config)
      crossable[categorical.name] = strings
      outputs[categorical.name] = _categorical(strings, categorical)
    for boolean in config.booleans:
      outputs[boolean.name] = _boolean(inputs[boolean.name])
    for timestamp in config.timestamps:
      _timestamp(inputs[timestamp.name], timestamp, outputs)
    for text in config.texts:
      outputs[text.name] = _categorical(_tokens(inputs[text.name]), text)
    # Other single-valued id outputs (buckets, booleans, timestamp parts) are
    # crossed by their id's text.
    for name in {f for cross in config.crosses for f in cross.features}:
      if name not in crossable:
        crossable[name] = tf.strings.as_string(outputs[name])
    for cross in config.crosses:
      joined = tf.strings.join([crossable[f] for f in cross.features],
                               separator=_CROSS_JOIN)
      outputs[cross.name] = _hash_ids(joined, cross.hash_buckets)
    if config.label.column in inputs:
      outputs[config.label.column] = label_transform(
          inputs[config.label.column], config)
    return outputs

  return preprocessing_fn
