"""TF Serving's gRPC API: PredictionService and ModelService, on grpc.aio.

    tensorflow.serving.PredictionService/Predict
    tensorflow.serving.PredictionService/Classify
    tensorflow.serving.PredictionService/Regress
    tensorflow.serving.PredictionService/GetModelMetadata
    tensorflow.serving.ModelService/GetModelStatus

The messages and stubs are tensorflow-serving-api's own, so a client written
for TF Serving (prediction_service_pb2_grpc.PredictionServiceStub on port
8500) works unchanged. The services run in the event loop that serves REST
and use the same model store (a call keeps the version it started with
across a hot swap), the same micro-batcher (gRPC and REST calls share
signature calls) and the same request log.

model_spec, as TF Serving reads it: `name` is the served model's; `version`,
when set, must be the version served (only the newest is loaded, as under TF
Serving's default version policy); a `version_label` is refused as TF
Serving refuses a label it has no mapping for, since this server defines
none. `signature_name` '' means serving_default, TF Serving's default:
Predict takes the signature's own inputs (serialized tf.Examples for
serving_default, one tensor per raw feature for serving_raw; see
grpc_requests.py) and answers the signature's outputs as TensorProtos under
their export names, all of them or those in `output_filter`. Classify and
Regress take TF Serving's tf.Example input lists; Classify answers one
(label, score) per class of the label, Regress the prediction; a classifier
refuses Regress and a regression model Classify, as over REST.

Status codes are the ones TF Serving's clients handle:
  INVALID_ARGUMENT    a request the checks refuse (wrong dtype or shape, an
                      unknown or missing input, a bad value, an unknown
                      signature), with the message REST gives in its 400
  NOT_FOUND           a model or version that is not served
  RESOURCE_EXHAUSTED  a message over --max-body-bytes, or more calls at once
                      than --max-connections (refused by gRPC itself)
  UNAVAILABLE         while shutting down: the calls in flight are
                      answered, new ones refused (see GrpcServer.stop)
  INTERNAL            anything unexpected: logged, and the server goes on
  UNIMPLEMENTED       MultiInference and HandleReloadConfigRequest
"""

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Dict, Optional, TypeVar

from google.protobuf import json_format
from google.protobuf import message as pb_message
import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from core.errors import UserError
from serving import grpc_requests
from serving import outputs as answers
from serving import request_checks
from serving.batcher import MicroBatcher
from serving.model_store import EXAMPLES
from serving.model_store import LoadedModel
from serving.model_store import ModelStore
from serving.model_store import RAW
from serving.request_log import RequestLog

log = logging.getLogger('serving')

SIGNATURE_DEF = 'signature_def'  # the one metadata field TF Serving has

# A refused request's REST status -> the gRPC code for the same refusal.
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE
}
_CLIP = 60
# Draining ends once no call has arrived for this long (see GrpcServer.stop).
_QUIET_SECONDS = 0.2

Request = TypeVar('Request', bound=pb_message.Message)


def _clip(text: str) -> str:
  return text if len(text) <= _CLIP else text[:_CLIP] + '...'


# ------------------------------------------------------------------ answers

_OUTPUT_FIELDS = {
    np.dtype(np.float32): (types_pb2.DT_FLOAT, 'float_val'),
    np.dtype(np.float64): (types_pb2.DT_DOUBLE, 'double_val'),
    np.dtype(np.int64): (types_pb2.DT_INT64, 'int64_val'),
    np.dtype(np.int32): (types_pb2.DT_INT32, 'int_val'),
    np.dtype(np.bool_): (types_pb2.DT_BOOL, 'bool_val'),
}


def tensor_proto(
    array: np.ndarray,
    proto: Optional[tensor_pb2.TensorProto] = None) -> tensor_pb2.TensorProto:
  """An output as TF Serving answers it: the values in the field of their
  dtype (float_val, string_val, ...), which clients reading
  `outputs[name].float_val` rely on; tf.make_ndarray reads it as well.
  Written into `proto` (e.g. a response's map entry) when given."""
  if proto is None:
    proto = tensor_pb2.TensorProto()
  for size in array.shape:
    proto.tensor_shape.dim.add(size=size)
  if array.dtype == object or array.dtype.kind in 'SU':
    proto.dtype = types_pb2.DT_STRING
    proto.string_val.extend(
        v if isinstance(v, bytes) else str(v).encode('utf-8')
        for v in array.reshape(-1).tolist())
  else:
    dtype, field = _OUTPUT_FIELDS[array.dtype]
    proto.dtype = dtype
    getattr(proto, field).extend(array.reshape(-1).tolist())
  return proto


# ------------------------------------------------------------------ serving


class _Serving:
  """What both services share: the store, batcher, log and limits."""

  def __init__(self, store: ModelStore, batcher: MicroBatcher,
               request_log: Optional[RequestLog], model_name: str,
               max_instances: int):
    self.store = store
    self.batcher = batcher
    self.request_log = request_log
    self.model_name = model_name
    self.max_instances = max_instances
    # Shutdown: once draining, a new call is refused with UNAVAILABLE while
    # the calls in flight finish (see GrpcServer.stop).
    self.draining = False
    self.in_flight = 0
    self.idle = asyncio.Event()
    self.idle.set()
    self.last_arrival = 0.0  # time.monotonic() of the latest call

  async def answer(self, context: grpc.aio.ServicerContext,
                   method: Callable[[Request],
                                    Awaitable[Any]], request: Request) -> Any:
    """The method's response, or the call aborted with the status a TF
    Serving client expects; nothing a client sends takes the server down."""
    self.last_arrival = time.monotonic()
    if self.draining:
      await context.abort(grpc.StatusCode.UNAVAILABLE,
                          'the server is shutting down')
    self.in_flight += 1
    self.idle.clear()
    try:
      return await method(request)
    except request_checks.RequestError as e:
      code = _CODES.get(e.status, grpc.StatusCode.INVALID_ARGUMENT)
      details = e.message
    except Exception as e:  # pylint: disable=broad-except
      log.exception('error serving a gRPC call')
      code = grpc.StatusCode.INTERNAL
      details = f'internal error: {type(e).__name__}'
    finally:
      self.in_flight -= 1
      if not self.in_flight:
        self.idle.set()
    # A message may quote what the client sent: lone surrogates are escaped
    # so that the status message is valid UTF-8.
    await context.abort(
        code,
        details.encode('utf-8', 'backslashreplace').decode('utf-8'))

  def _spec(self, request: Any) -> model_pb2.ModelSpec:
    if not request.HasField('model_spec'):
      raise request_checks.RequestError('Missing ModelSpec')
    spec = request.model_spec
    if spec.WhichOneof('version_choice') == 'version_label':
      raise request_checks.RequestError(
          'Unrecognized servable version label: '
          f'{_clip(spec.version_label)}; this server has no version labels '
          '(it serves the newest version; ask for it by number or leave the '
          'version out)')
    return spec

  def model_for(self, request: Any) -> LoadedModel:
    """The model to answer with, taken once: a swap later does not affect
    the call."""
    spec = self._spec(request)
    specific = spec.WhichOneof('version_choice') == 'version'
    wanted = (f'Specific({_clip(spec.name)}, {spec.version.value})'
              if specific else f'Latest({_clip(spec.name)})')
    if spec.name != self.model_name:
      raise request_checks.RequestError(
          f'Servable not found for request: {wanted}; this server serves '
          f'model {self.model_name!r}', 404)
    model = self.store.current
    if model is None:
      raise request_checks.RequestError('no model loaded', 503)
    if specific and spec.version.value != model.version:
      raise request_checks.RequestError(
          f'Servable not found for request: {wanted}; version '
          f'{model.version} is served', 404)
    return model

  def answer_spec(self,
                  model: LoadedModel,
                  signature: str = '') -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=self.model_name, signature_name=signature)
    spec.version.value = model.version
    return spec

  def log(self, model: LoadedModel, rows: request_checks.Rows,
          outputs: Dict[str, np.ndarray]) -> None:
    """Queues the served rows for the request log, as REST does."""
    if self.request_log is not None:
      self.request_log.write(model.version, rows.received, outputs)

  # --------------------------------------------------------------- methods

  async def predict(
      self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    model = self.model_for(request)
    signature = request_checks.check_signature(
        request.model_spec.signature_name, EXAMPLES, model.signature_names)
    available = model.signature_defs[signature].get('outputs', {})
    wanted = list(request.output_filter)
    for i, name in enumerate(wanted):
      if name not in available:
        raise request_checks.RequestError(
            f'output_filter: {_clip(name)!r} is not an output of signature '
            f'{signature}; it has {", ".join(sorted(available))}')
      if name in wanted[:i]:
        raise request_checks.RequestError(
            f'output_filter: {name!r} is listed twice')
    if signature == RAW:
      rows = grpc_requests.raw_tensor_rows(request.inputs, model.schema,
                                           self.max_instances)
    else:
      rows = grpc_requests.serialized_example_rows(request.inputs, model.schema,
                                                   self.max_instances)
    outputs = await self.batcher.predict(model, signature, rows.rows)
    self.log(model, rows, outputs)
    response = predict_pb2.PredictResponse(
        model_spec=self.answer_spec(model, signature))
    for name, value in outputs.items():
      if not wanted or name in wanted:
        tensor_proto(value, response.outputs[name])
    return response

  async def classify(
      self, request: classification_pb2.ClassificationRequest
  ) -> classification_pb2.ClassificationResponse:
    model = self.model_for(request)
    answers.check_classifier(model, answers.GRPC_NAMES)
    signature = request_checks.check_signature(
        request.model_spec.signature_name, EXAMPLES, model.signature_names)
    rows = grpc_requests.input_rows(request.input, model.schema,
                                    self.max_instances)
    outputs = await self.batcher.predict(model, signature, rows.rows)
    results = answers.classify_results(model, outputs, answers.GRPC_NAMES)
    self.log(model, rows, outputs)
    response = classification_pb2.ClassificationResponse(
        model_spec=self.answer_spec(model, signature))
    for pairs in results:
      classes = response.result.classifications.add().classes
      for label, score in pairs:
        classes.add(label=label, score=score)
    return response

  async def regress(
      self, request: regression_pb2.RegressionRequest
  ) -> regression_pb2.RegressionResponse:
    model = self.model_for(request)
    answers.check_regressor(model, answers.GRPC_NAMES)
    signature = request_checks.check_signature(
        request.model_spec.signature_name, EXAMPLES, model.signature_names)
    rows = grpc_requests.input_rows(request.input, model.schema,
                                    self.max_instances)
    outputs = await self.batcher.predict(model, signature, rows.rows)
    results = answers.regress_results(outputs, answers.GRPC_NAMES)
    self.log(model, rows, outputs)
    response = regression_pb2.RegressionResponse(
        model_spec=self.answer_spec(model, signature))
    for value in results:
      response.result.regressions.add(value=value)
    return response

  async def metadata(
      self, request: get_model_metadata_pb2.GetModelMetadataRequest
  ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    model = self.model_for(request)
    fields = list(request.metadata_field)
    if not fields:
      raise request_checks.RequestError(
          'GetModelMetadataRequest must specify at least one metadata_field '
          f'({SIGNATURE_DEF!r})')
    for field in fields:
      if field != SIGNATURE_DEF:
        raise request_checks.RequestError(
            f'Metadata field {_clip(field)!r} is not supported; the one '
            f'field is {SIGNATURE_DEF!r}')
    signatures = get_model_metadata_pb2.SignatureDefMap()
    json_format.ParseDict({'signature_def': model.signature_defs}, signatures)
    response = get_model_metadata_pb2.GetModelMetadataResponse(
        model_spec=self.answer_spec(model))
    response.metadata[SIGNATURE_DEF].Pack(signatures)
    return response

  async def status(
      self, request: get_model_status_pb2.GetModelStatusRequest
  ) -> get_model_status_pb2.GetModelStatusResponse:
    spec = self._spec(request)
    specific = spec.WhichOneof('version_choice') == 'version'
    version = spec.version.value if specific else None
    entries = (
        self.store.status(version) if spec.name == self.model_name else [])
    if not entries:
      raise request_checks.RequestError(
          f'Could not find version {version} of model {_clip(spec.name)}'
          if specific else
          f'Could not find any versions of model {_clip(spec.name)}', 404)
    response = get_model_status_pb2.GetModelStatusResponse()
    json_format.ParseDict({'model_version_status': entries}, response)
    return response


# The method names are the service's, in the protos' CamelCase.
# pylint: disable=invalid-name


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  """tensorflow.serving.PredictionService."""

  def __init__(self, serving: _Serving):
    self._serving = serving

  async def Predict(
      self, request: predict_pb2.PredictRequest,
      context: grpc.aio.ServicerContext) -> predict_pb2.PredictResponse:
    serving = self._serving
    return await serving.answer(context, serving.predict, request)

  async def Classify(
      self, request: classification_pb2.ClassificationRequest,
      context: grpc.aio.ServicerContext
  ) -> classification_pb2.ClassificationResponse:
    serving = self._serving
    return await serving.answer(context, serving.classify, request)

  async def Regress(
      self, request: regression_pb2.RegressionRequest,
      context: grpc.aio.ServicerContext) -> regression_pb2.RegressionResponse:
    serving = self._serving
    return await serving.answer(context, serving.regress, request)

  async def GetModelMetadata(
      self, request: get_model_metadata_pb2.GetModelMetadataRequest,
      context: grpc.aio.ServicerContext
  ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    serving = self._serving
    return await serving.answer(context, serving.metadata, request)

  async def MultiInference(self, request: Any,
                           context: grpc.aio.ServicerContext) -> None:
    await context.abort(
        grpc.StatusCode.UNIMPLEMENTED,
        'MultiInference is not served; call Classify or '
        'Regress')


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
  """tensorflow.serving.ModelService."""

  def __init__(self, serving: _Serving):
    self._serving = serving

  async def GetModelStatus(
      self, request: get_model_status_pb2.GetModelStatusRequest,
      context: grpc.aio.ServicerContext
  ) -> get_model_status_pb2.GetModelStatusResponse:
    serving = self._serving
    return await serving.answer(context, serving.status, request)

  async def HandleReloadConfigRequest(
      self, request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(
        grpc.StatusCode.UNIMPLEMENTED,
        'there is no model config to reload: new versions '
        'under the model base path are picked up by polling')


# pylint: enable=invalid-name


class GrpcServer:
  """The gRPC server beside the REST one, in the same event loop.

  Create, start and stop it inside the running loop (grpc.aio binds to it).
  """

  def __init__(self,
               store: ModelStore,
               batcher: MicroBatcher,
               request_log: Optional[RequestLog],
               model_name: str,
               *,
               max_message_bytes: int,
               max_instances: int,
               max_calls: Optional[int] = None,
               idle_timeout: Optional[float] = None):
    options = [
        ('grpc.max_receive_message_length', max_message_bytes),
        # Without this, a second server could bind the same port and take
        # half of the calls instead of failing.
        ('grpc.so_reuseport', 0),
    ]
    if idle_timeout:
      options.append(('grpc.max_connection_idle_ms', int(idle_timeout * 1000)))
    self._server = grpc.aio.server(
        options=options, maximum_concurrent_rpcs=max_calls)
    self._serving = _Serving(store, batcher, request_log, model_name,
                             max_instances)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(self._serving), self._server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(self._serving), self._server)

  async def start(self, host: str, port: int) -> int:
    """Listens on host:port (0: a free port); returns the port."""
    address = f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
    try:
      bound = self._server.add_insecure_port(address)
    except RuntimeError as e:
      raise UserError(f'cannot listen on {address} (gRPC): {e}') from None
    if not bound:
      raise UserError(f'cannot listen on {address} (gRPC): the port is taken '
                      'or the address is not this machine\'s')
    await self._server.start()
    return bound

  async def stop(self, grace: float) -> None:
    """Answers the calls in flight and refuses new ones with UNAVAILABLE,
    for at most `grace` seconds, then stops listening.

    gRPC's own stop(grace) lets running calls finish but cancels (status
    CANCELLED) the calls it has received and not yet handed to a handler,
    which under load there always are. So the server drains first: every
    call that arrives is refused with UNAVAILABLE (which clients retry
    elsewhere) until the calls in flight are done and no call has come for
    a moment; only then does gRPC stop, with nothing left to cancel.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    serving = self._serving
    serving.draining = True
    try:
      await asyncio.wait_for(serving.idle.wait(), grace)
    except asyncio.TimeoutError:
      pass
    while (loop.time() < deadline and
           time.monotonic() - serving.last_arrival < _QUIET_SECONDS):
      await asyncio.sleep(_QUIET_SECONDS / 5)
    await self._server.stop(max(0.0, deadline - loop.time()))
