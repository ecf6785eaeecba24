"""TF Serving's gRPC API of python -m trainer.serve, with the official stubs.

The real server runs as a subprocess with REST and gRPC on free ports (one
server for the module, on its own copy of the toy model). A TF Serving
client (tensorflow-serving-api's PredictionServiceStub and ModelServiceStub)
gets the predictions REST gives and the in-process SavedModel computes, for
raw tensors (serving_raw) and serialized tf.Examples (serving_default), over
Predict, Classify, GetModelMetadata and GetModelStatus; Regress refuses a
classifier (test_any_dataset checks it on a regression model). Bad calls get
the status code TF Serving's clients handle, with a message naming the input
(the same words REST uses), and the server keeps serving. gRPC calls go to
the request log beside REST requests; a new version is swapped in under a
stream of calls without one failing; SIGTERM answers the calls in flight,
refuses the rest with UNAVAILABLE and exits 0. The request decoding is also
fuzzed in-process.
"""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from google.protobuf import json_format
import grpc
from hypothesis import given
from hypothesis import strategies as st
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import predict_pb2

from core.config import load_config
from core.layout import ModelDir
from serving import grpc_requests
from serving import request_checks
from tests import grpc_client
from tests.conftest import ROOT
from tests.conftest import TOY_CONFIG
from tests.fuzzing import fuzz_settings
from tests.serving.conftest import MAX_BODY
from tests.serving.conftest import MAX_INSTANCES
from tests.serving.test_rest import close
from tests.serving.test_rest import read_lines
from tests.serving.test_rest import settled_count
from tests.serving.test_rest import toy_instances
from tests.serving.test_rest import wait_for
from tests.serving_client import Server

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE

# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope='module')
def client(server):
  assert server.grpc_port, 'the server printed no gRPC address'
  c = grpc_client.Client(server.grpc_port)
  yield c
  c.close()


@pytest.fixture(scope='module')
def config():
  return load_config(TOY_CONFIG)


@pytest.fixture(scope='module')
def rows():
  return toy_instances(120, seed=31)


def plain_rows(rows, n):
  """Rows serving_raw can carry: no missing int (it has no encoding for
  one); missing floats and strings included."""
  return [r for r in rows if r['visits'] is not None][:n]


def call_code(method, request, timeout=60):
  """(status code, details or response) of one call."""
  try:
    return OK, method(request, timeout=timeout)
  except grpc.RpcError as e:
    return e.code(), e.details()


# --------------------------------------------------------------- predictions


def test_predict_raw_tensors_equal_rest_and_in_process(server, client,
                                                       reference, rows,
                                                       model_copy):
  _, version = model_copy
  batch = plain_rows(rows, 40)
  assert any(r['height'] is None for r in batch)  # NaN: missing
  assert any(r['city'] is None for r in batch)  # '': missing
  expected_p, expected_c = reference.via_examples(batch)
  request = grpc_client.raw_request(batch, reference.kinds, server.name)
  response = client.predictions.Predict(request, timeout=60)

  assert response.model_spec.name == server.name
  assert response.model_spec.version.value == version
  assert response.model_spec.signature_name == 'serving_raw'
  assert set(response.outputs) == {'probabilities', 'classes'}
  probabilities = response.outputs['probabilities']
  assert probabilities.dtype == types_pb2.DT_FLOAT
  assert [d.size for d in probabilities.tensor_shape.dim] == [len(batch), 1]
  # The values are in float_val and string_val, where TF Serving puts them
  # and where clients read them without tf.make_ndarray.
  close(list(probabilities.float_val), expected_p)
  classes = response.outputs['classes']
  assert classes.dtype == types_pb2.DT_STRING
  assert [d.size for d in classes.tensor_shape.dim] == [len(batch)]
  assert [c.decode() for c in classes.string_val] == expected_c

  status, doc = server.post('predict', {'instances': batch})
  assert status == 200, doc
  assert [p['probabilities'][0] for p in doc['predictions']] == list(
      grpc_client.output(response, 'probabilities')[:, 0].astype(float))
  assert [p['classes'] for p in doc['predictions']] == expected_c

  # Values in the proto's fields rather than tensor_content, and TensorFlow's
  # shorthand of one value repeated, read the same.
  request = grpc_client.raw_request(batch[:3], reference.kinds, server.name)
  height = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
  height.tensor_shape.dim.add(size=3)
  height.float_val.append(batch[0]['height'] or 1.0)
  request.inputs['height'].CopyFrom(height)
  same = [dict(r, height=batch[0]['height'] or 1.0) for r in batch[:3]]
  response = client.predictions.Predict(request, timeout=60)
  close(
      grpc_client.output(response, 'probabilities')[:, 0],
      reference.via_examples(same)[0])


def test_predict_examples_on_the_default_signature(server, client, reference,
                                                   rows, config, model_copy):
  _, version = model_copy
  batch = rows[:MAX_INSTANCES]
  assert any(r['visits'] is None for r in batch)  # a missing int too
  expected_p, expected_c = reference.via_examples(batch)
  # No signature_name: serving_default, as in TF Serving.
  response = client.predictions.Predict(
      grpc_client.examples_request(batch, config, server.name), timeout=60)
  assert response.model_spec.signature_name == 'serving_default'
  close(grpc_client.output(response, 'probabilities')[:, 0], expected_p)
  assert [c.decode() for c in grpc_client.output(response, 'classes')] == (
      expected_c)

  status, doc = server.post('predict', {
      'instances': batch,
      'signature_name': 'serving_default'
  })
  assert status == 200
  assert [p['probabilities'][0] for p in doc['predictions']] == list(
      grpc_client.output(response, 'probabilities')[:, 0].astype(float))

  # The version by number, and an output_filter, as TF Serving takes them.
  request = grpc_client.examples_request(
      batch[:5], config, server.name, version=version)
  request.output_filter.append('classes')
  response = client.predictions.Predict(request, timeout=60)
  assert set(response.outputs) == {'classes'}
  assert response.model_spec.version.value == version
  assert [c.decode() for c in grpc_client.output(response, 'classes')] == (
      expected_c[:5])


def test_classify_equals_rest_and_regress_refuses_a_classifier(
    server, client, reference, rows, config):
  batch = rows[:30]
  response = client.predictions.Classify(
      grpc_client.classify_request(batch, config, server.name), timeout=60)
  assert response.model_spec.signature_name == 'serving_default'
  status, doc = server.post('classify', {'examples': batch})
  assert status == 200, doc
  got = [[[c.label, c.score]
          for c in r.classes]
         for r in response.result.classifications]
  assert [[label for label, _ in r] for r in got
         ] == [[label for label, _ in r] for r in doc['results']]
  close([score for r in got for _, score in r],
        [score for r in doc['results'] for _, score in r])
  expected_p, _ = reference.via_examples(batch)
  close([r[1][1] for r in got], expected_p)

  # A context holds the features common to every example.
  context = {'color': batch[0]['color']}
  examples = [{k: v for k, v in r.items() if k != 'color'} for r in batch[:5]]
  response = client.predictions.Classify(
      grpc_client.classify_request(
          examples, config, server.name, context=context),
      timeout=60)
  same = [dict(r, **context) for r in batch[:5]]
  close([r.classes[1].score for r in response.result.classifications],
        reference.via_examples(same)[0])

  code, details = call_code(
      client.predictions.Regress,
      grpc_client.regress_request(batch[:2], config, server.name))
  assert code == INVALID and 'classifier' in details and 'Classify' in details


# ------------------------------------------------------------- status, meta


def test_metadata_and_status_equal_rest(server, client, model_copy):
  _, version = model_copy
  request = grpc_client.spec(get_model_metadata_pb2.GetModelMetadataRequest(),
                             server.name)
  request.metadata_field.append('signature_def')
  response = client.predictions.GetModelMetadata(request, timeout=60)
  assert response.model_spec.name == server.name
  assert response.model_spec.version.value == version
  signatures = get_model_metadata_pb2.SignatureDefMap()
  assert response.metadata['signature_def'].Unpack(signatures)
  assert set(signatures.signature_def) == {'serving_default', 'serving_raw'}
  raw = signatures.signature_def['serving_raw']
  assert raw.inputs['visits'].dtype == types_pb2.DT_INT64
  assert raw.outputs['probabilities'].dtype == types_pb2.DT_FLOAT
  status, doc, _ = server.request('GET', f'/v1/models/{server.name}/metadata')
  assert status == 200
  assert json_format.MessageToDict(
      signatures,
      preserving_proto_field_name=True,
      including_default_value_fields=True)['signature_def'] == (
          doc['metadata']['signature_def']['signature_def'])

  for asked in (None, version):
    request = grpc_client.spec(
        get_model_status_pb2.GetModelStatusRequest(),
        server.name,
        version=asked)
    response = client.models.GetModelStatus(request, timeout=60)
    assert [
        (s.version, s.state, s.status.error_code, s.status.error_message)
        for s in response.model_version_status
    ] == [(version, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0, '')]
  status, doc, _ = server.request('GET', f'/v1/models/{server.name}')
  assert json_format.MessageToDict(
      response,
      preserving_proto_field_name=True,
      including_default_value_fields=True) == doc


# ---------------------------------------------------------------- bad calls


def _tensor(values, dtype, shape=None):
  return tf.make_tensor_proto(values, dtype=dtype, shape=shape)


def test_bad_calls_get_the_status_a_client_expects(server, client, reference,
                                                   rows, config):
  good = [r for r in rows if None not in r.values()][:3]
  kinds = reference.kinds
  stub = client.predictions

  def raw(**inputs):
    request = grpc_client.raw_request(good, kinds, server.name)
    for key, proto in inputs.items():
      if proto is None:
        del request.inputs[key]
      else:
        request.inputs[key].CopyFrom(proto)
    return request

  def examples(*protos, signature=None):
    request = grpc_client.spec(
        predict_pb2.PredictRequest(), server.name, signature=signature)
    request.inputs['examples'].CopyFrom(
        tf.make_tensor_proto([
            p if isinstance(p, bytes) else p.SerializeToString() for p in protos
        ]))
    return request

  def example(**change):
    ex = grpc_client.example(good[0], config)
    for key, values in change.items():
      feature = ex.features.feature[key]
      feature.Clear()
      if values and isinstance(values[0], bytes):
        feature.bytes_list.value.extend(values)
      elif values and isinstance(values[0], float):
        feature.float_list.value.extend(values)
      elif values:
        feature.int64_list.value.extend(values)
    return ex

  content = _tensor(np.array([1.0, 2.0, 3.0], np.float32), tf.float32)
  content.tensor_content = content.tensor_content[:-2]
  stray = tensor_pb2.TensorProto(
      dtype=types_pb2.DT_INT64, float_val=[1.0, 2.0, 3.0])
  stray.tensor_shape.dim.add(size=3)
  four_values = tensor_pb2.TensorProto(
      dtype=types_pb2.DT_INT64, int64_val=[1, 2, 3, 4])
  four_values.tensor_shape.dim.add(size=3)
  no_spec = predict_pb2.PredictRequest()
  no_spec.CopyFrom(raw())
  no_spec.ClearField('model_spec')
  unknown_model = raw()
  unknown_model.model_spec.name = 'nosuchmodel'
  unknown_version = raw()
  unknown_version.model_spec.version.value = 7
  labelled = raw()
  labelled.model_spec.version_label = 'stable'
  unknown_signature = raw()
  unknown_signature.model_spec.signature_name = 'nope'
  unknown_output = raw()
  unknown_output.output_filter.append('nope')
  nothing = grpc_client.spec(classification_pb2.ClassificationRequest(),
                             server.name)
  no_examples = grpc_client.classify_request([], config, server.name)
  clash = grpc_client.classify_request(
      good, config, server.name, context={'city': 'oslo'})
  big = examples(
      grpc_client.example(dict(good[0], city='x' * MAX_BODY), config))
  no_fields = grpc_client.spec(get_model_metadata_pb2.GetModelMetadataRequest(),
                               server.name)
  bad_field = grpc_client.spec(get_model_metadata_pb2.GetModelMetadataRequest(),
                               server.name)
  bad_field.metadata_field.append('nope')
  n = MAX_INSTANCES + 1
  too_many = grpc_client.raw_request([good[0]] * n, kinds, server.name)

  predict = stub.Predict
  cases = [
      # (method, request, code, fragments the message must contain)
      (predict, raw(visits=_tensor([1, 2, 3], tf.int32)), INVALID,
       ["'visits'", 'DT_INT64', 'DT_INT32']),
      (predict, raw(height=_tensor([1.0, 2.0, 3.0], tf.float64)), INVALID,
       ["'height'", 'DT_FLOAT', 'DT_DOUBLE']),
      (predict, raw(city=_tensor(['a', 'b', 'c'], tf.string, [3, 1])), INVALID,
       ["'city'", '[3, 1]']),
      (predict, raw(city=_tensor('a', tf.string)), INVALID,
       ["'city'", 'shape []']),
      (predict, raw(shoe_size=_tensor([1, 2, 3], tf.int64)), INVALID,
       ["'shoe_size'", 'unknown']),
      (predict, raw(outcome=_tensor(['no'] * 3, tf.string)), INVALID,
       ["'outcome'", 'label']),
      (predict, raw(color=None), INVALID, ["'color'", 'missing']),
      (predict, raw(visits=_tensor([1, 2], tf.int64)), INVALID,
       ["'visits'", '2', '3']),
      (predict, raw(visits=four_values), INVALID, ["'visits'", '4 values']),
      (predict, grpc_client.raw_request([], kinds,
                                        server.name), INVALID, ['empty']),
      (predict, too_many, INVALID, [str(n), 'limit']),
      (predict, raw(height=content), INVALID, ["'height'", 'tensor_content']),
      (predict, raw(visits=stray), INVALID,
       ["'visits'", 'no values', 'int64_val', 'not float_val']),
      (predict, raw(city=_tensor([b'ok', b'\xff', b'ok'], tf.string)), INVALID,
       ['instance 1', "'city'", 'UTF-8']),
      (predict, raw(height=_tensor([math.inf, 1.0, 2.0], tf.float32)), INVALID,
       ['instance 0', "'height'", 'not finite']),
      (predict, grpc_client.raw_request(good, kinds, server.name, signature=''),
       INVALID, ['serving_default', 'serving_raw']),
      (predict, examples(b'\xff\xff\xff'), INVALID,
       ['examples[0]', 'tf.Example']),
      (predict, examples(example(), example(shoe_size=[1])), INVALID,
       ['examples[1]', "'shoe_size'"]),
      (predict, examples(example(visits=[b'12x'])), INVALID,
       ['examples[0]', "'visits'", "'12x' is not a number"]),
      (predict, examples(example(visits=[2.5])), INVALID,
       ['examples[0]', "'visits'", 'fraction']),
      (predict, examples(example(height=[1.0, 2.0])), INVALID,
       ['examples[0]', "'height'", 'at most one']),
      (predict, examples(example(height=[math.nan])), INVALID,
       ['examples[0]', "'height'", 'not finite']),
      (predict, no_spec, INVALID, ['ModelSpec']),
      (predict, unknown_model, NOT_FOUND, ['nosuchmodel']),
      (predict, unknown_version, NOT_FOUND, ['toy', '7']),
      (predict, labelled, INVALID, ['version label', 'stable']),
      (predict, unknown_signature, INVALID, ["'nope'", 'serving_raw']),
      (predict, unknown_output, INVALID, ["'nope'", 'probabilities']),
      (predict, big, grpc.StatusCode.RESOURCE_EXHAUSTED, ['larger than max']),
      (stub.Classify, nothing, INVALID, ['example_list']),
      (stub.Classify, no_examples, INVALID, ['examples', 'empty']),
      (stub.Classify, clash, INVALID, ['examples[0]', "'city'", 'context']),
      (stub.GetModelMetadata, no_fields, INVALID, ['metadata_field']),
      (stub.GetModelMetadata, bad_field, INVALID, ["'nope'"]),
      (client.models.GetModelStatus,
       grpc_client.spec(get_model_status_pb2.GetModelStatusRequest(),
                        'nosuchmodel'), NOT_FOUND, ['nosuchmodel']),
      (client.models.GetModelStatus,
       grpc_client.spec(
           get_model_status_pb2.GetModelStatusRequest(), server.name,
           version=7), NOT_FOUND, ['7']),
      (stub.MultiInference, inference_pb2.MultiInferenceRequest(),
       grpc.StatusCode.UNIMPLEMENTED, ['MultiInference']),
  ]
  for method, request, code, fragments in cases:
    got, details = call_code(method, request)
    assert got == code, (fragments, got, details)
    for fragment in fragments:
      assert fragment in details, (fragment, details)

  # The checks are REST's: the same problem, in the same words.
  for change, grpc_inputs in (
      ({
          'shoe_size': 1
      }, {
          'shoe_size': _tensor([1, 2, 3], tf.int64)
      }),
      ({
          'outcome': 'no'
      }, {
          'outcome': _tensor(['no'] * 3, tf.string)
      }),
  ):
    status, doc = server.post('predict',
                              {'instances': [dict(good[0], **change)]})
    assert status == 400
    _, details = call_code(predict, raw(**grpc_inputs))
    assert details.split(': ', 1)[1] == doc['error'].split(': ', 1)[1]
  status, doc = server.post(
      'predict',
      '{"instances": [%s]}' % json_dumps_with(good[0], 'height', '1e999'))
  _, details = call_code(predict,
                         raw(height=_tensor([math.inf, 1.0, 2.0], tf.float32)))
  assert status == 400 and details.split(': ', 1)[1] == doc['error'].split(
      ': ', 1)[1]

  # Still serving, correctly, after all of that.
  assert server.proc.poll() is None
  response = predict(
      grpc_client.raw_request(good, kinds, server.name), timeout=60)
  close(
      grpc_client.output(response, 'probabilities')[:, 0],
      reference.via_examples(good)[0])
  assert 'Traceback' not in server.stderr()


def json_dumps_with(instance, name, token):
  """The instance as JSON with `token` written literally as name's value."""
  body = json.dumps(dict(instance, **{name: 987654.125}))
  return body.replace('987654.125', token)


# --------------------------------------------------- log and shared batcher


def test_grpc_and_rest_calls_share_batcher_and_request_log(
    server, client, reference, rows, config):
  batch = plain_rows(rows, 48)
  expected_p, _ = reference.via_examples(batch)
  start = settled_count(server.log_path)
  results = {}

  def caller(k):
    for i in range(k, len(batch), 12):
      if k % 3 == 0:
        status, doc = server.post('predict', {'instances': [batch[i]]})
        results[i] = ('rest', status, doc['predictions'][0]['probabilities'][0]
                      if status == 200 else doc)
      elif k % 3 == 1:
        code, response = call_code(
            client.predictions.Predict,
            grpc_client.raw_request([batch[i]], reference.kinds, server.name))
        results[i] = ('raw', code,
                      float(response.outputs['probabilities'].float_val[0])
                      if code == OK else response)
      else:
        code, response = call_code(
            client.predictions.Predict,
            grpc_client.examples_request([batch[i]], config, server.name))
        results[i] = ('examples', code,
                      float(response.outputs['probabilities'].float_val[0])
                      if code == OK else response)

  threads = [threading.Thread(target=caller, args=(k,)) for k in range(12)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert all(r[1] in (200, OK) for r in results.values()), results
  close([results[i][2] for i in range(len(batch))], expected_p)

  def logged():
    lines = read_lines(server.log_path)
    return lines[start:] if len(lines) >= start + len(batch) else None

  lines = wait_for(logged, what='the request log')
  assert len(lines) == len(batch)

  def matches(line, row):
    got = line['features']
    return (set(got) == set(row) and got['visits'] == row['visits'] and
            (got['color'] or None) == row['color'] and
            (got['height'] is None
             if row['height'] is None else got['height'] is not None and
             math.isclose(got['height'], row['height'], rel_tol=1e-6)))

  for i, row in enumerate(batch):
    line = next(l for l in lines if matches(l, row))
    # As sent: null for a missing value, '' where serving_raw says missing.
    sent_city = ('' if results[i][0] == 'raw' else None) if (
        row['city'] is None) else row['city']
    assert line['features']['city'] == sent_city, (results[i][0], line)
    assert line['prediction']['probability'] == pytest.approx(
        expected_p[i], rel=1e-5, abs=1e-6)
    assert line['prediction']['class'] in config.label.classes


# ----------------------------------------------------------------- hot swap


def test_version_swap_under_a_stream_of_calls(server, client, model_copy,
                                              reference, rows):
  model_dir, version = model_copy
  root = os.path.join(model_dir, ModelDir.EXPORT_DIR)
  new = version + 1
  batch = plain_rows(rows, 40)
  expected_p, _ = reference.via_examples(batch)
  stop = threading.Event()
  seen, failures = [], []

  def caller(k):
    i = k
    while not stop.is_set():
      code, response = call_code(
          client.predictions.Predict,
          grpc_client.raw_request([batch[i]], reference.kinds, server.name))
      if code != OK:
        failures.append((code, response))
        return
      p = response.outputs['probabilities'].float_val[0]
      if not math.isclose(p, expected_p[i], rel_tol=1e-5, abs_tol=1e-6):
        failures.append((i, p, expected_p[i]))
      seen.append((k, response.model_spec.version.value))
      i = (i + 4) % len(batch)

  threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
  for t in threads:
    t.start()
  try:
    time.sleep(0.5)
    staging = os.path.join(root, f'.copy-{new}')
    shutil.copytree(os.path.join(root, str(version)), staging)
    os.rename(staging, os.path.join(root, str(new)))

    def swapped():
      request = grpc_client.spec(get_model_status_pb2.GetModelStatusRequest(),
                                 server.name)
      response = client.models.GetModelStatus(request, timeout=60)
      return [
          s.version
          for s in response.model_version_status
          if s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
      ] == [new]

    wait_for(swapped, what='the new version to be served')
    time.sleep(0.5)
  finally:
    stop.set()
    for t in threads:
      t.join()
  assert not failures, failures[:5]
  assert {v for _, v in seen} == {version, new}
  for k in range(4):  # each caller saw the old version, then only the new
    mine = [v for c, v in seen if c == k]
    assert mine == sorted(mine)
  code, details = call_code(
      client.predictions.Predict,
      grpc_client.raw_request(
          batch[:1], reference.kinds, server.name, version=version))
  assert code == NOT_FOUND and str(version) in details


# ------------------------------------------------------------------ SIGTERM


def test_sigterm_answers_calls_in_flight_then_unavailable(
    model_copy, tmp_path, rows, config):
  model_dir, _ = model_copy
  log_path = str(tmp_path / 'requests.jsonl')
  # One model thread: calls queue up, so some are in flight at any moment.
  s = Server(model_dir, str(tmp_path), '--request-log', log_path,
             '--poll-seconds', '0', '--model-threads', '1')
  batch = rows[:20]
  answered, refused = [], []  # (start, end, rows); (code, details)

  def caller(k):
    c = grpc_client.Client(s.grpc_port)
    try:
      deadline = time.monotonic() + 120
      while time.monotonic() < deadline:
        start = time.monotonic()
        code, got = call_code(
            c.predictions.Predict,
            grpc_client.examples_request(batch[k:] + batch[:k], config, s.name),
            timeout=30)
        if code != OK:
          refused.append((code, got))
          return
        answered.append((start, time.monotonic(), len(batch)))
    finally:
      c.close()

  threads = [threading.Thread(target=caller, args=(k,)) for k in range(6)]
  try:
    for t in threads:
      t.start()
    wait_for(lambda: len(answered) >= 30, what='traffic')
    signalled = time.monotonic()
    code = s.stop(signal.SIGTERM)
  finally:
    s.stop()
    for t in threads:
      t.join()
  assert code == 0, s.stderr()[-3000:]
  # Calls in flight at SIGTERM were answered; every caller's next call was
  # refused with UNAVAILABLE (by the draining server, or by a closed port);
  # no call was cut off with another status.
  assert any(start < signalled < end for start, end, _ in answered)
  assert [c for c, _ in refused] == [UNAVAILABLE] * 6, refused
  assert any('shutting down' in d for _, d in refused), refused
  # Every answered row is in the request log (flushed at shutdown), no more.
  assert len(read_lines(log_path)) == sum(n for _, _, n in answered)
  assert 'Traceback' not in s.stderr()


def test_a_taken_grpc_port_is_a_usage_error(model_copy, tmp_path):
  model_dir, _ = model_copy
  with socket.socket() as taken:
    taken.bind(('127.0.0.1', 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONWARNINGS='ignore')
    result = subprocess.run([
        sys.executable, '-m', 'trainer.serve', '--model-dir', model_dir,
        '--port', '0', '--grpc-port',
        str(port), '--poll-seconds', '0'
    ],
                            cwd=str(ROOT),
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert f'cannot listen on 127.0.0.1:{port} (gRPC)' in result.stderr
  assert result.stdout == ''


# --------------------------------------------------------- in-process fuzzing

CONFIGS = [
    TOY_CONFIG,
    str(ROOT / 'tests' / 'data' / 'mixed.yaml'),
    str(ROOT / 'tests' / 'data' / 'events.yaml')
]
_SCHEMAS = [request_checks.RowSchema(load_config(c)) for c in CONFIGS]
_DTYPES = [
    types_pb2.DT_INT64, types_pb2.DT_FLOAT, types_pb2.DT_STRING,
    types_pb2.DT_INT32, types_pb2.DT_DOUBLE, types_pb2.DT_BOOL, 0, 999
]

_FIELD = {
    types_pb2.DT_INT64: 'int64_val',
    types_pb2.DT_FLOAT: 'float_val',
    types_pb2.DT_STRING: 'string_val'
}
_TEXT = st.one_of(
    st.sampled_from([
        b'', b' ', b'true', b'no', b'2', b'\xff', b'2024-05-01T13:45:00Z',
        b'a|b| c', b'nan', b'1e999', b'12'
    ]),
    st.text(max_size=8).map(lambda t: t.encode('utf-8', 'surrogatepass')),
    st.binary(max_size=12))
_VALUES = {
    'int64_val': st.integers(-2**63, 2**63 - 1),
    'float_val': st.floats(width=32),
    'string_val': _TEXT,
}


@st.composite
def tensors(draw, dtype, n):
  """Mostly a well-formed [n] tensor of `dtype`; sometimes a wrong dtype,
  shape, field or count."""
  flaw = draw(
      st.sampled_from(['none'] * 40 +
                      ['dtype', 'shape', 'field', 'count', 'content']))
  if flaw == 'dtype':
    dtype = draw(st.sampled_from(_DTYPES))
  proto = tensor_pb2.TensorProto(dtype=dtype)
  dims = [n]
  if flaw == 'shape':
    dims = draw(st.lists(st.integers(-2, 5), max_size=3))
    proto.tensor_shape.unknown_rank = draw(st.booleans())
  for size in dims:
    proto.tensor_shape.dim.add(size=size)
  field = _FIELD.get(dtype, 'int64_val')
  if flaw == 'field':
    field = draw(st.sampled_from(sorted(_VALUES)))
  count = draw(st.integers(0, 6)) if flaw == 'count' else n
  if flaw == 'content':
    proto.tensor_content = draw(st.binary(max_size=48))
  else:
    getattr(proto, field).extend(
        draw(st.lists(_VALUES[field], min_size=count, max_size=count)))
  return proto


@fuzz_settings(150)
@given(schema=st.sampled_from(_SCHEMAS), data=st.data())
def test_any_tensors_give_rows_or_a_request_error(schema, data):
  """Whatever tensors arrive, the decoder gives rows, one per instance, or
  a RequestError (INVALID_ARGUMENT), never anything else."""
  n = data.draw(st.integers(0, 5))
  keys = [k for k in schema.names if data.draw(st.integers(0, 39))]
  if not data.draw(st.integers(0, 9)):
    keys.append(data.draw(st.sampled_from(['unknown', schema.label])))
  inputs = {
      k:
          data.draw(
              tensors(grpc_requests.DTYPES[schema.kinds.get(k, 'string')], n))
      for k in keys
  }
  try:
    rows = grpc_requests.raw_tensor_rows(inputs, schema, 4)
  except request_checks.RequestError as e:
    assert e.status == 400 and e.message
    return
  assert 1 <= len(rows) <= 4 and len(rows.received) == len(rows)
  for row in rows.rows:
    assert set(row) == set(schema.names)


_LISTS = st.one_of(
    st.lists(_TEXT, max_size=3),
    st.lists(st.integers(-2**63, 2**63 - 1), max_size=3),
    st.lists(st.floats(width=32), max_size=3))


@fuzz_settings(150)
@given(schema=st.sampled_from(_SCHEMAS), data=st.data())
def test_any_examples_give_rows_or_a_request_error(schema, data):
  """tf.Examples with any value lists under the model's features (and now
  and then another name), and bytes that may not be tf.Examples at all:
  rows or a RequestError, never anything else."""
  names = schema.names + ['unknown', schema.label]
  serialized = []
  for _ in range(data.draw(st.integers(1, 3))):
    ex = tf.train.Example()
    for name in data.draw(
        st.lists(st.sampled_from(schema.names), max_size=8, unique=True)):
      values = data.draw(_LISTS)
      feature = ex.features.feature[name]
      if values and isinstance(values[0], bytes):
        feature.bytes_list.value.extend(values)
      elif values and isinstance(values[0], float):
        feature.float_list.value.extend(values)
      else:
        feature.int64_list.value.extend(values)
    if not data.draw(st.integers(0, 9)):
      extra = data.draw(st.sampled_from(names))
      ex.features.feature[extra].int64_list.value.append(1)
    serialized.append(ex.SerializeToString())
  if not data.draw(st.integers(0, 4)):
    serialized.append(data.draw(st.binary(max_size=64)))
  inputs = {'examples': tf.make_tensor_proto(serialized)}
  try:
    rows = grpc_requests.serialized_example_rows(inputs, schema, 10)
  except request_checks.RequestError as e:
    assert e.status == 400 and e.message
    return
  assert len(rows) == len(serialized) == len(rows.received)
  for row in rows.rows:
    assert set(row) == set(schema.names)
