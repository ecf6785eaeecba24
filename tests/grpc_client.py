"""What a TF Serving gRPC client does, with the official stubs: requests
built from REST instances, for the tests that compare the two APIs."""

import math

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2


class Client:
  """A channel to a server's gRPC port and TF Serving's two stubs."""

  def __init__(self, port):
    self.channel = grpc.insecure_channel(f'127.0.0.1:{port}')
    self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(
        self.channel)
    self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

  def close(self):
    self.channel.close()


def spec(request, name, version=None, signature=None):
  """Fills request.model_spec as a TF Serving client does."""
  request.model_spec.name = name
  if version is not None:
    request.model_spec.version.value = version
  if signature is not None:
    request.model_spec.signature_name = signature
  return request


def example(instance, config):
  """A REST instance (JSON values, null for missing) as a raw tf.Example: a
  missing value left out, a list column's items one by one."""
  columns = {c.name: c for c in config.columns}
  ex = tf.train.Example()
  for name, value in instance.items():
    if value is None:
      continue
    feature = ex.features.feature[name]
    column = columns[name]
    if column.is_list:
      items = value if isinstance(value, list) else value.split(
          column.separator)
      feature.bytes_list.value.extend(
          i.strip().encode() for i in items if i.strip())
    elif isinstance(value, bool):
      feature.int64_list.value.append(int(value))
    elif isinstance(value, int):
      feature.int64_list.value.append(value)
    elif isinstance(value, float):
      feature.float_list.value.append(value)
    else:
      feature.bytes_list.value.append(value.encode())
  return ex


def examples_request(instances, config, name, **kwargs):
  """Predict on serving_default (the default signature): serialized
  tf.Examples in input 'examples'."""
  request = spec(predict_pb2.PredictRequest(), name, **kwargs)
  request.inputs['examples'].CopyFrom(
      tf.make_tensor_proto(
          [example(i, config).SerializeToString() for i in instances]))
  return request


def raw_request(instances, kinds, name, signature='serving_raw', **kwargs):
  """Predict on serving_raw: one tensor per raw feature, in the signature's
  dtype; NaN for a missing float and '' for a missing string, as the
  signature documents (an int has no missing value)."""
  request = spec(
      predict_pb2.PredictRequest(), name, signature=signature, **kwargs)
  for feature, kind in kinds.items():
    column = [i[feature] for i in instances]
    if kind == 'int':
      proto = tf.make_tensor_proto(np.array(column, np.int64))
    elif kind == 'float':
      proto = tf.make_tensor_proto(
          np.array([math.nan if v is None else v for v in column], np.float32))
    else:
      proto = tf.make_tensor_proto(['' if v is None else v for v in column])
    request.inputs[feature].CopyFrom(proto)
  return request


def classify_request(instances, config, name, context=None, **kwargs):
  request = spec(classification_pb2.ClassificationRequest(), name, **kwargs)
  _fill_input(request.input, instances, config, context)
  return request


def regress_request(instances, config, name, context=None, **kwargs):
  request = spec(regression_pb2.RegressionRequest(), name, **kwargs)
  _fill_input(request.input, instances, config, context)
  return request


def _fill_input(request_input, instances, config, context):
  if context is None:
    request_input.example_list.SetInParent()  # set even when empty
    request_input.example_list.examples.extend(
        example(i, config) for i in instances)
  else:
    listed = request_input.example_list_with_context
    listed.examples.extend(example(i, config) for i in instances)
    listed.context.CopyFrom(example(context, config))


def output(response, name):
  """A Predict output as an array (tf.make_ndarray, as clients read it)."""
  return tf.make_ndarray(response.outputs[name])
