"""Raw feature specs derived from the dataset config.

One description of the raw data serves every consumer: the Arrow record
batches the Beam job carries, the TFXIO tensor adapter that feeds them to
tf.Transform and TFDV, and the `tf.io` feature spec the serving signatures
parse. Every raw feature is variable-length (a missing value is an absent
value), so a tf.Example with a missing feature still parses at serving time.
"""

from typing import Dict, List

import pyarrow as pa
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.public import tfxio
from tfx_bsl.tfxio import tensor_representation_util

from pipeline.config import Column, DatasetConfig

_TF_DTYPES = {'int': tf.int64, 'float': tf.float32, 'string': tf.string}
_ARROW_VALUE_TYPES = {
    'int': pa.int64(),
    'float': pa.float32(),
    'string': pa.large_binary(),
}


def arrow_type(column: Column) -> pa.DataType:
  return pa.large_list(_ARROW_VALUE_TYPES[column.raw_type])


def tf_dtype(column: Column) -> tf.dtypes.DType:
  return _TF_DTYPES[column.raw_type]


def arrow_schema(config: DatasetConfig) -> pa.Schema:
  """Schema of the cleansed record batches: features and label."""
  return pa.schema([(c.name, arrow_type(c)) for c in config.raw_columns])


def raw_feature_spec(config: DatasetConfig,
                     include_label: bool = True) -> Dict[str, tf.io.VarLenFeature]:
  return {
      c.name: tf.io.VarLenFeature(tf_dtype(c))
      for c in config.raw_columns
      if include_label or c.name != config.label.column
  }


def raw_schema(config: DatasetConfig) -> schema_pb2.Schema:
  return schema_utils.schema_from_feature_spec(raw_feature_spec(config))


def tensor_adapter_config(config: DatasetConfig) -> tfxio.TensorAdapterConfig:
  """How tf.Transform turns the cleansed record batches into tensors."""
  schema = raw_schema(config)
  return tfxio.TensorAdapterConfig(
      arrow_schema(config),
      tensor_representation_util.InferTensorRepresentationsFromSchema(schema))


def serving_feature_names(config: DatasetConfig) -> List[str]:
  """Raw features a client sends: every feature column, never the label."""
  return [c.name for c in config.feature_columns]
