"""tf.Transform's transformed schema inferred when the analyzers' results are
bound: the schema tf.Transform writes, without a second import of the
bound SavedModel."""

import os

import apache_beam as beam
from google.protobuf import text_format
import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.beam import impl
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import schema_utils

from pipeline import preprocess
from pipeline import tft_bound_metadata

_ROWS = [{
    's': ['abc'[i % 3] * (1 + i % 2)],
    'x': [float(i % 7)],
    'n': [i % 4],
} for i in range(40)]
_METADATA = dataset_metadata.DatasetMetadata(
    schema_utils.schema_from_feature_spec({
        's': tf.io.FixedLenFeature([1], tf.string),
        'x': tf.io.FixedLenFeature([1], tf.float32),
        'n': tf.io.FixedLenFeature([1], tf.int64),
    }))


def _preprocessing_fn(inputs):
  """Schema overrides that depend on the analyzers' results (a vocabulary's
    size, bucket boundaries) and one that does not."""
  return {
      's_id': tft.compute_and_apply_vocabulary(inputs['s']),
      's_hashed': tft.hash_strings(inputs['s'], 5),
      'x_bucket': tft.bucketize(inputs['x'], 3),
      'x_scaled': tft.scale_to_z_score(inputs['x']),
      'n_id': tft.compute_and_apply_vocabulary(inputs['n']),
  }


def _written_schema(out: str) -> bytes:
  with beam.Pipeline() as p:
    with preprocess.tft_context(temp_dir=os.path.join(out, 'tmp')):
      transform_fn = ((p | beam.Create(_ROWS), _METADATA)
                      | tft_beam.AnalyzeDataset(_preprocessing_fn))
      _ = transform_fn | tft_beam.WriteTransformFn(out)
  with open(os.path.join(out, 'transformed_metadata', 'schema.pbtxt'),
            'rb') as f:
    return f.read()


@pytest.fixture(name='imports')
def _imports(monkeypatch):
  """tf.Transform's own functions in place, and how often its inference
    imported the bound SavedModel."""
  made = {'imports': 0}
  infer = impl._infer_metadata_from_saved_model_v1  # pylint: disable=protected-access

  def counted(saved_model_dir):
    made['imports'] += 1
    return infer(saved_model_dir)

  monkeypatch.setattr(impl, '_infer_metadata_from_saved_model_v1', counted)
  monkeypatch.setattr(impl, '_replace_tensors_with_constant_values',
                      tft_bound_metadata._LIBRARY_BIND)  # pylint: disable=protected-access
  monkeypatch.setattr(impl, '_infer_metadata_from_saved_model',
                      tft_bound_metadata._LIBRARY_INFER)  # pylint: disable=protected-access
  return made


def test_the_schema_is_tf_transforms_without_importing_the_model_again(
    imports, tmp_path):
  library = _written_schema(str(tmp_path / 'library'))
  assert imports['imports'] == 1
  tft_bound_metadata.install()
  tft_bound_metadata.install()
  ours = _written_schema(str(tmp_path / 'ours'))
  assert imports['imports'] == 1
  assert ours == library
  schema = text_format.Parse(ours, schema_pb2.Schema())
  domains = {
      f.name: (f.int_domain.min, f.int_domain.max) for f in schema.feature
  }
  # Six tokens, four integers, three buckets.
  assert domains['s_id'] == (-1, 5) and domains['n_id'] == (-1, 3)
  assert domains['x_bucket'] == (0, 2)
  assert not tft_bound_metadata._INFERRED  # pylint: disable=protected-access


def test_an_inference_that_fails_when_bound_is_made_again_from_the_model(
    imports, tmp_path, monkeypatch):
  library = _written_schema(str(tmp_path / 'library'))
  tft_bound_metadata.install()

  def failing(*args, **kwargs):
    raise RuntimeError('not here')

  monkeypatch.setattr(tft_bound_metadata, '_inferred_metadata', failing)
  assert _written_schema(str(tmp_path / 'ours')) == library
  assert imports['imports'] == 2
  assert not tft_bound_metadata._INFERRED  # pylint: disable=protected-access
