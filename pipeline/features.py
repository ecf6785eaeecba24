"""The raw data as the Beam job carries it: Arrow schema and TFXIO adapter.

Derived from the one raw feature spec (core/features.py): the Arrow record
batches the job carries, and the TFXIO tensor adapter that feeds them to
tf.Transform and TFDV.
"""

import pyarrow as pa
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.public import tfxio
from tfx_bsl.tfxio import tensor_representation_util

from core.config import Column
from core.config import DatasetConfig
from core.features import raw_feature_spec

_ARROW_VALUE_TYPES = {
    'int': pa.int64(),
    'float': pa.float32(),
    'string': pa.large_binary(),
}


def arrow_type(column: Column) -> pa.DataType:
  return pa.large_list(_ARROW_VALUE_TYPES[column.raw_type])


def arrow_schema(config: DatasetConfig) -> pa.Schema:
  """Schema of the cleansed record batches: features and label."""
  return pa.schema([(c.name, arrow_type(c)) for c in config.raw_columns])


def raw_schema(config: DatasetConfig) -> schema_pb2.Schema:
  return schema_utils.schema_from_feature_spec(raw_feature_spec(config))


def tensor_adapter_config(config: DatasetConfig) -> tfxio.TensorAdapterConfig:
  """How tf.Transform turns the cleansed record batches into tensors."""
  schema = raw_schema(config)
  return tfxio.TensorAdapterConfig(
      arrow_schema(config),
      tensor_representation_util.InferTensorRepresentationsFromSchema(schema))
