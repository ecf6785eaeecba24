"""The preprocessing_fn: full-pass statistics from train, applied as a graph.

A module fixture analyzes a small train set with tf.Transform; the tests then
apply the resulting transform graph to raw tensors the way serving does, so
they check the graph itself (not only the Beam output) for each transform.
"""

import dataclasses
import math
import os

import apache_beam as beam
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from core import features as core_features
from core.config import load_config
from core.config import NumericFeature
from pipeline import cleanse
from pipeline import features
from pipeline import preprocess
from pipeline.preprocessing_fn import make_preprocessing_fn
from pipeline.sources import RawChunk
from tests.conftest import TOY_CONFIG

TRAIN = [
    # height, visits, city, color, note, outcome
    '160.0, 0, paris, red, a, no',
    '170.0, 9, paris, green, b, yes',
    '180.0, 99, oslo, blue, c, yes',
    '?, 3, oslo, red, d, no',
    '190.0, ?, lima, red, e, yes.',
    '150.0, 1, ?, green, f, no',
]


@pytest.fixture(scope='module')
def toy():
  return load_config(TOY_CONFIG)


def _batch(toy, lines, name='rows.csv'):
  """CSV lines, none of them quarantined, as one cleansed record batch."""
  batch, quarantine, _ = cleanse.RowParser(toy).parse_chunk(
      RawChunk(name, 2, 'csv', [l.encode() for l in lines]))
  assert quarantine == []
  return batch


def _analyze(toy, chunks, out):
  """The transform graph analyzed on `chunks` of CSV lines, one record batch
  each."""
  batches = [
      _batch(toy, lines, f'train-{i}.csv') for i, lines in enumerate(chunks)
  ]
  with beam.Pipeline() as p, preprocess.tft_context(
      temp_dir=os.path.join(out, 'tmp')):
    transform_fn = (
        (p | beam.Create(batches), features.tensor_adapter_config(toy))
        | tft_beam.AnalyzeDataset(make_preprocessing_fn(toy)))
    _ = transform_fn | tft_beam.WriteTransformFn(out)
  return tft.TFTransformOutput(out)


@pytest.fixture(scope='module')
def transform_output(toy, tmp_path_factory):
  return _analyze(toy, [TRAIN], str(tmp_path_factory.mktemp('tft')))


def test_vocabulary_counts_tokens_over_all_batches(toy, tmp_path):
  """Most frequent first, ties in tf.Transform's order (the larger token
  first), the threshold applied to the count over the whole split: each batch
  is reduced to its distinct tokens before the counts meet."""
  chunks = [
      [
          '160.0, 0, paris, red, a, no', '170.0, 1, oslo, red, b, yes',
          '180.0, 2, lima, blue, c, no'
      ],
      ['160.0, 3, paris, green, d, yes', '170.0, 4, paris, red, e, no'],
      [
          '180.0, 5, oslo, red, f, yes', '190.0, 6, rome, green, g, no',
          '150.0, 7, paris, blue, h, yes'
      ],
  ]
  output = _analyze(toy, chunks, str(tmp_path))
  # red 4; green and blue 2 each.
  assert output.vocabulary_by_name('color') == [b'red', b'green', b'blue']
  # frequency_threshold 2: paris 4, oslo 2 (one per batch) are kept; lima
  # and rome, once each, are not.
  assert output.vocabulary_by_name('city') == [b'paris', b'oslo']


def _raw(rows, toy):
  """Raw sparse tensors, as the serving signature parses them from Examples."""
  tensors = {}
  for column in toy.raw_columns:
    if column.name == toy.label.column:
      continue
    values, indices = [], []
    for i, row in enumerate(rows):
      if row.get(column.name) is not None:
        values.append(row[column.name])
        indices.append([i, 0])
    dtype = core_features.tf_dtype(column)
    tensors[column.name] = tf.SparseTensor(
        tf.constant(indices, tf.int64, shape=[len(indices), 2]),
        tf.constant(values, dtype, shape=[len(values)]), [len(rows), 1])
  return tensors


def _transform(transform_output, toy, rows):
  layer = transform_output.transform_features_layer()
  return {k: v.numpy() for k, v in layer(_raw(rows, toy)).items()}


def test_missing_numeric_is_imputed_with_train_mean(transform_output, toy):
  out = _transform(transform_output, toy, [{'height': None}, {'height': 170.0}])
  # Train heights present: 160, 170, 180, 190, 150 -> mean 170 -> z-score 0.
  assert out['height'][0] == pytest.approx(0.0, abs=1e-6)
  assert out['height'][1] == pytest.approx(0.0, abs=1e-6)


def test_zscore_uses_train_statistics_of_present_values(transform_output, toy):
  # The row missing a height is filled after the analysis: it changes neither
  # the mean nor the standard deviation (population, as tft.var computes).
  heights = np.array([160, 170, 180, 190, 150], dtype=np.float64)
  std = heights.std()
  out = _transform(transform_output, toy, [{'height': 190.0}])
  assert out['height'][0] == pytest.approx((190 - 170) / std, rel=1e-5)


def test_a_scaled_value_is_the_same_quotient_in_the_job_and_serving(
    toy, tmp_path):
  """(height - mean) / std correctly rounded, to the bit, where the job
  transforms (tf.Transform's TF1 session) and where the export serves (the
  transform layer, TF2). Grappler rewrote the session's division by the
  analyzed constant into a product with its reciprocal: one ulp off for
  these heights, so the trained-on and the served value differed."""
  # Train heights 160, 170, 180, 190, 150: mean 170, variance 200, exact in
  # float32, as is the square root, so numpy gives the expected bits.
  std = np.sqrt(np.float32(200))
  candidates = np.arange(100, 260, dtype=np.float32) + np.float32(0.25)
  quotient = (candidates - np.float32(170)) / std
  by_reciprocal = (candidates - np.float32(170)) * (np.float32(1) / std)
  differ = quotient != by_reciprocal
  heights, expected = candidates[differ][:8], quotient[differ][:8]
  assert len(heights) == 8  # where the rewrite would show
  lines = [f'{h}, 1, paris, red, a, no' for h in heights]
  out = str(tmp_path / 'tft')
  with beam.Pipeline() as p, preprocess.tft_context(
      temp_dir=str(tmp_path / 'tmp')):
    splits = {
        'train': p | 'Train' >> beam.Create([_batch(toy, TRAIN)]),
        'eval': p | 'Eval' >> beam.Create([_batch(toy, lines)]),
    }
    transformed, transform_fn = splits | preprocess.AnalyzeAndTransform(toy)
    _ = transform_fn | tft_beam.WriteTransformFn(out)
    in_job = transformed['eval'] | beam.FlatMap(
        lambda b: np.asarray(b.column('height').flatten()).tolist())
    assert_that(in_job, equal_to([float(e) for e in expected]))
  served = _transform(
      tft.TFTransformOutput(out), toy, [{
          'height': float(h)
      } for h in heights])
  assert served['height'].tolist() == expected.tolist()


def test_log1p_minmax_with_zero_imputation(transform_output, toy):
  out = _transform(transform_output, toy, [{
      'visits': 0
  }, {
      'visits': 99
  }, {
      'visits': None
  }, {
      'visits': 1000
  }])
  assert out['visits'][0] == pytest.approx(0.0)
  assert out['visits'][1] == pytest.approx(1.0)
  assert out['visits'][2] == pytest.approx(0.0)  # impute: zero
  # Out of the train range: extrapolates, never an error.
  assert out['visits'][3] == pytest.approx(
      math.log1p(1000) / math.log1p(99), rel=1e-5)


def test_log1p_zscore_and_minmax_with_mean_imputation(toy, tmp_path):
  # The imputation mean is of the raw values, the z-score's statistics of
  # their log1p; min and max come from one analyzer, mean and variance from
  # another, and each must equal what tft.min/max/mean/var give.
  config = dataclasses.replace(
      toy,
      numeric=(NumericFeature('height', log1p=True, buckets=4),
               NumericFeature('visits', scale='minmax')))
  out = _transform(
      _analyze(config, [TRAIN], str(tmp_path)), config, [{
          'height': None,
          'visits': None
      }, {
          'height': 190.0,
          'visits': 99
      }])
  heights = np.log1p(np.array([160, 170, 180, 190, 150], dtype=np.float64))
  visits_mean = (0 + 9 + 99 + 3 + 1) / 5
  assert out['height'] == pytest.approx(
      (np.log1p([170.0, 190.0]) - heights.mean()) / heights.std(),
      rel=1e-5,
      abs=1e-5)
  assert out['visits'] == pytest.approx([visits_mean / 99, 1.0], rel=1e-5)


def test_vocabulary_frequency_threshold_and_oov(transform_output, toy):
  vocab = transform_output.vocabulary_by_name('city')
  # paris and oslo appear twice; lima and the missing value only once.
  assert sorted(vocab) == [b'oslo', b'paris']
  out = _transform(transform_output, toy, [{
      'city': 'paris'
  }, {
      'city': '  paris '
  }, {
      'city': 'lima'
  }, {
      'city': 'atlantis'
  }, {
      'city': '?'
  }, {
      'city': None
  }])
  ids = out['city']
  assert ids[0] == ids[1]  # stray spaces are trimmed inside the graph
  oov = len(vocab)  # one OOV bucket, right after the vocabulary
  assert list(ids[2:]) == [oov] * 4


def test_oov_buckets_and_one_table_per_vocabulary(toy, tmp_path):
  # Unseen tokens hash into the buckets after the vocabulary exactly as
  # tf.lookup.StaticVocabularyTable (tf.Transform's own lookup) puts them,
  # with one lookup table per vocabulary in the graph: that class holds two.
  config = dataclasses.replace(
      toy,
      categorical=tuple(
          dataclasses.replace(c, oov_buckets=5) if c.name == 'city' else c
          for c in toy.categorical))
  output = _analyze(config, [TRAIN], str(tmp_path))
  tokens = [
      'paris', 'oslo', 'lima', 'atlantis', 'rome', 'tokyo', 'quito', 'bern',
      'kyiv', 'lagos', 'lyon', 'nice'
  ]
  ids = _transform(output, config, [{'city': t} for t in tokens])['city']
  reference = tf.lookup.StaticVocabularyTable(
      tf.lookup.TextFileInitializer(
          output.vocabulary_file_by_name('city'), tf.string,
          tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
          tf.lookup.TextFileIndex.LINE_NUMBER),
      num_oov_buckets=5)
  expected = reference.lookup(tf.constant(tokens)).numpy()
  assert list(ids) == list(expected)
  assert list(expected[:2]) == [0, 1]  # paris, oslo (ties: the larger first)
  assert len(set(expected[2:])) > 1  # several OOV buckets are in use
  domain = {
      f.name: f.int_domain for f in output.transformed_metadata.schema.feature
  }['city']
  assert (domain.min, domain.max) == (0, 2 + 5 - 1)

  saved = saved_model_pb2.SavedModel()
  with open(
      os.path.join(output.transform_savedmodel_dir, 'saved_model.pb'),
      'rb') as f:
    saved.ParseFromString(f.read())
  graph = saved.meta_graphs[0].graph_def
  tables = [
      node for node in [
          *graph.node, *(n for function in graph.library.function
                         for n in function.node_def)
      ] if node.op == 'HashTableV2'
  ]
  assert len(tables) == 2  # city and color


def test_missing_value_unseen_in_train_goes_to_oov(transform_output, toy):
  # color: allowed values only, no threshold; missing never occurs in train,
  # so a missing color at serving goes to the OOV bucket like any unseen value.
  vocab = transform_output.vocabulary_by_name('color')
  assert sorted(vocab) == [b'blue', b'green', b'red']
  out = _transform(transform_output, toy, [{'color': '?'}, {'color': 'NA'}])
  assert list(out['color']) == [3, 3]


def test_buckets_and_cross_have_id_ranges(transform_output):
  schema = transform_output.transformed_metadata.schema
  domains = {
      f.name: f.int_domain for f in schema.feature if f.HasField('int_domain')
  }
  assert (domains['height_bucket'].min, domains['height_bucket'].max) == (0, 3)
  assert (domains['city_x_height_bucket'].min,
          domains['city_x_height_bucket'].max) == (0, 49)
  assert domains['city'].max == 2  # 2 words + 1 OOV bucket
  assert set(transform_output.transformed_feature_spec()) == {
      'height', 'height_bucket', 'visits', 'city', 'color',
      'city_x_height_bucket', 'outcome'
  }


def test_cross_is_a_deterministic_hash(transform_output, toy):
  rows = [{
      'city': 'paris',
      'height': 150.0
  }, {
      'city': 'paris',
      'height': 150.0
  }, {
      'city': 'oslo',
      'height': 190.0
  }]
  out = _transform(transform_output, toy, rows)
  crosses = out['city_x_height_bucket']
  assert crosses[0] == crosses[1]
  assert ((crosses >= 0) & (crosses < 50)).all()


def test_label_is_binary(toy):
  from pipeline.preprocessing_fn import label_transform
  labels = tf.constant(['yes', 'no', ' yes '])
  assert list(label_transform(labels, toy).numpy()) == [1, 0, 1]
