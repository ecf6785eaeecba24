"""The HTTP routes: TF Serving's REST URLs and JSON shapes, on aiohttp.

    GET  /v1/models/NAME[/versions/V]                 model status
    GET  /v1/models/NAME[/versions/V]/metadata        signature defs
    POST /v1/models/NAME[/versions/V]:predict         "instances" or "inputs"
    POST /v1/models/NAME[/versions/V]:classify        "examples" (+ "context")
    POST /v1/models/NAME[/versions/V]:regress         "examples" (+ "context")
    GET  /healthz

The shapes are TF Serving's, so its clients work unchanged. Every output of
the signature is returned: row requests get
{"predictions": [{"probabilities": [p], "classes": c}, ...]}, columnar ones
{"outputs": {"probabilities": [[p], ...], "classes": [...]}}; classify gets
{"results": [[[label, score], ...], ...]} with one pair per class of the
label (classifiers only); regress, of a regression model, gets
{"results": [y, ...]}; every error is {"error": "..."}. One addition: predict,
classify and regress responses carry "model_version" (and an X-Model-Version
header) naming the version that answered, which is what a client needs to
see across a hot swap.

TF Serving's default signature for :predict is serving_default; here the
default for :predict is serving_raw, since JSON instances are raw feature
objects (the project's contract). "signature_name": "serving_default" is
accepted too: the rows are then sent as tf.Examples. :classify and :regress use
serving_default unless told otherwise.

Error policy: anything wrong with a request is a 4xx with a message: a body
that is not JSON or breaks the rules, a path or version that does not exist
(whatever characters the client put in the URL), a body that does not arrive
within --body-timeout (408). The middleware turns any unexpected exception
into a 500 JSON answer without taking the server down; requests that are not
HTTP at all are answered by connections.py, also in JSON.
"""

import asyncio
import json
import logging
import re
from typing import Any, Dict, List, Optional

import numpy as np
from aiohttp import web

from serving import validation
from serving.batcher import MicroBatcher
from serving.model_store import EXAMPLES, RAW, LoadedModel, ModelStore
from serving.request_log import RequestLog
from trainer import export

log = logging.getLogger('serving')

_PATH = re.compile(
    r'^/v1/models/(?P<name>[^/:]+)'
    r'(?:/versions/(?P<version>[^/:]+))?'
    r'(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?/?$')
VERBS = ('predict', 'classify', 'regress')
# A version is a non-negative int64 written in ASCII digits (str.isdigit()
# would also take '²', which int() does not).
_VERSION = re.compile(r'[0-9]{1,19}')
_INT64_MAX = 2**63 - 1

STORE = web.AppKey('store', ModelStore)
BATCHER = web.AppKey('batcher', MicroBatcher)
REQUEST_LOG = web.AppKey('request_log', object)
SETTINGS = web.AppKey('settings', dict)


def _dumps(obj: Any) -> str:
  return json.dumps(obj, ensure_ascii=False)


def error_response(status: int, message: str) -> web.Response:
  # A message may quote a URL or key the client sent: lone surrogates (from
  # undecodable bytes) are escaped so that the answer is valid UTF-8.
  message = message.encode('utf-8', 'backslashreplace').decode('utf-8')
  return web.json_response({'error': message}, status=status, dumps=_dumps)


@web.middleware
async def json_errors(request: web.Request, handler):
  """Every error as {"error": ...}; nothing a client sends escapes as a
  traceback or stops the server."""
  try:
    return await handler(request)
  except validation.RequestError as e:
    response = error_response(e.status, e.message)
    if e.close:
      response.force_close()
    return response
  except ConnectionError:
    raise  # the client went away: nothing to answer (aiohttp drops it)
  except web.HTTPException as e:
    if e.status < 400:
      raise
    message = e.text if e.text and not e.text.startswith(str(e.status)) \
        else e.reason
    return error_response(e.status, message)
  except Exception as e:  # pylint: disable=broad-except
    log.exception('error serving %s %s', request.method, request.path)
    return error_response(500, f'internal error: {type(e).__name__}')


# ------------------------------------------------------------------ handlers


async def healthz(request: web.Request) -> web.Response:
  model = request.app[STORE].current
  if model is None:
    return error_response(503, 'no model loaded')
  return web.json_response({'status': 'ok',
                            'model': request.app[SETTINGS]['model_name'],
                            'version': str(model.version)})


def _route(request: web.Request) -> Dict[str, Optional[str]]:
  match = _PATH.match(request.path)
  if not match:
    raise validation.RequestError(f'no such resource: {request.path}', 404)
  parts = match.groupdict()
  name = request.app[SETTINGS]['model_name']
  if parts['name'] != name:
    raise validation.RequestError(
        f'Servable not found for request: Latest({parts["name"]}); this '
        f'server serves model {name!r}', 404)
  version = parts['version']
  if version is not None and not (_VERSION.fullmatch(version) and
                                  int(version) <= _INT64_MAX):
    raise validation.RequestError(
        f'version must be a non-negative integer, got '
        f'{validation.describe(version)[:80]}', 404)
  return parts


def _model_for(request: web.Request, version: Optional[str]) -> LoadedModel:
  """The model to answer with, taken once: a swap later does not affect it."""
  model = request.app[STORE].current
  if model is None:
    raise validation.RequestError('no model loaded', 503)
  if version is not None and int(version) != model.version:
    name = request.app[SETTINGS]['model_name']
    raise validation.RequestError(
        f'Servable not found for request: Specific({name}, {int(version)}); '
        f'version {model.version} is served', 404)
  return model


async def get_model(request: web.Request) -> web.Response:
  parts = _route(request)
  if parts['verb'] is not None:
    raise validation.RequestError(
        f':{parts["verb"]} needs POST', 405)
  name = request.app[SETTINGS]['model_name']
  if parts['metadata']:
    model = _model_for(request, parts['version'])
    return web.json_response({
        'model_spec': {'name': name, 'signature_name': '',
                       'version': str(model.version)},
        'metadata': {'signature_def': {
            'signature_def': model.signature_defs}},
    }, dumps=_dumps)
  version = int(parts['version']) if parts['version'] is not None else None
  entries = request.app[STORE].status(version)
  if not entries:
    what = f'version {version} of ' if version is not None else ''
    raise validation.RequestError(
        f'Could not find any versions of model {name}' if version is None
        else f'Could not find {what}model {name}', 404)
  return web.json_response({'model_version_status': entries})


async def _read_body(request: web.Request) -> Any:
  settings = request.app[SETTINGS]
  limit = settings['max_body_bytes']
  if request.content_length is not None and request.content_length > limit:
    raise validation.RequestError(
        f'request body is {request.content_length} bytes; the limit is '
        f'{limit} (--max-body-bytes)')
  timeout = settings['body_timeout']
  try:
    body = await asyncio.wait_for(request.read(), timeout)
  except web.HTTPRequestEntityTooLarge:
    raise validation.RequestError(
        f'request body is over the limit of {limit} bytes '
        '(--max-body-bytes)') from None
  except asyncio.TimeoutError:
    _abandon_body(request)
    raise validation.RequestError(
        f'request body not received within {timeout:g} s '
        '(--body-timeout)', 408, close=True) from None
  except (ConnectionError, web.HTTPException):
    raise
  except Exception as e:  # pylint: disable=broad-except
    # A body aiohttp cannot read: bad chunked encoding, undecompressable
    # Content-Encoding, cut short.
    _abandon_body(request)
    reason = str(e).strip().splitlines()[-1].strip() if str(e).strip() else ''
    raise validation.RequestError(
        'request body cannot be read' + (f': {reason[:100]}' if reason else
                                         ''), close=True) from None
  return validation.parse_json(body)


def _abandon_body(request: web.Request) -> None:
  """Reads no more of a body that failed: the answer closes the connection,
  and aiohttp does not linger to drain (and re-raise) what is left."""
  request.content.feed_eof()


async def post_model(request: web.Request) -> web.Response:
  parts = _route(request)
  verb = parts['verb']
  if verb is None:
    raise validation.RequestError(
        f'POST {request.path}: expected :predict, :classify or :regress at '
        'the end of the URL', 404)
  if verb not in VERBS:
    raise validation.RequestError(
        f'unknown method :{verb}; expected :predict, :classify or :regress',
        404)
  model = _model_for(request, parts['version'])
  obj = await _read_body(request)
  settings = request.app[SETTINGS]
  if verb == 'predict':
    rows = validation.parse_predict(obj, model.schema,
                                    settings['max_instances'])
    signature = validation.check_signature(rows.signature_name, RAW,
                                           model.signature_names)
  else:
    if verb == 'classify':
      check_classifier(model)
    else:
      check_regressor(model)
    rows = validation.parse_classify(obj, model.schema,
                                     settings['max_instances'], verb)
    signature = validation.check_signature(rows.signature_name, EXAMPLES,
                                           model.signature_names)
  outputs = await request.app[BATCHER].predict(model, signature, rows.rows)
  columns = {name: _json_column(value) for name, value in outputs.items()}
  n = len(rows)
  if verb == 'classify':
    body = {'results': classify_results(model, outputs)}
  elif verb == 'regress':
    body = {'results': regress_results(outputs)}
  elif rows.columnar:
    body = {'outputs': columns}
  else:
    body = {'predictions': [{name: column[i]
                             for name, column in columns.items()}
                            for i in range(n)]}
  request_log = request.app[REQUEST_LOG]
  if request_log is not None:
    request_log.write(model.version, rows.received,
                      [log_prediction(columns, i) for i in range(n)])
  version = str(model.version)
  body['model_version'] = version
  return web.json_response(body, headers={'X-Model-Version': version},
                           dumps=_dumps)


def _json_column(value: np.ndarray) -> List[Any]:
  """An output array as JSON values; strings (bytes) decoded as UTF-8, as
  TF Serving does for outputs whose name does not end in _bytes."""
  values = value.tolist()
  if value.dtype == object:
    values = _decode(values)
  return values


def _decode(values: Any) -> Any:
  if isinstance(values, bytes):
    return values.decode('utf-8', errors='replace')
  if isinstance(values, list):
    return [_decode(v) for v in values]
  return values


def log_prediction(columns: Dict[str, List[Any]], i: int) -> Dict[str, Any]:
  """The request log's "prediction": {"probability": p, "class": c} for a
  binary classifier (one probability per row); any other output under its
  own name."""
  prediction: Dict[str, Any] = {}
  for name, column in columns.items():
    value = column[i]
    if name == export.PROBABILITIES:
      if isinstance(value, list) and len(value) == 1:
        prediction['probability'] = value[0]
      else:
        prediction['probabilities'] = value
    elif name == export.CLASSES:
      prediction['class'] = value
    elif name == export.PREDICTIONS and isinstance(value, list) and len(
        value) == 1:
      prediction['prediction'] = value[0]
    else:
      prediction[name] = value
  return prediction


def check_classifier(model: LoadedModel) -> None:
  if not model.classes:
    raise validation.RequestError(
        'this model is not a classifier (its label has no classes); use '
        ':predict')


def check_regressor(model: LoadedModel) -> None:
  if model.classes:
    raise validation.RequestError(
        'this model is a classifier (its label has classes); use :classify '
        'or :predict')


def regress_results(outputs: Dict[str, np.ndarray]) -> List[float]:
  """TF Serving's regress result: one number per example."""
  if export.PREDICTIONS not in outputs:
    raise validation.RequestError(
        f'the signature has no {export.PREDICTIONS!r} output to regress '
        'with; use :predict')
  return outputs[export.PREDICTIONS].reshape(-1).astype(np.float64).tolist()


def classify_results(model: LoadedModel, outputs: Dict[str, np.ndarray]
                    ) -> List[List[List[Any]]]:
  """TF Serving's classify result: [[label, score], ...] per example, one
  pair per class. A single probability column is P(positive) of a binary
  label; otherwise one column per class, in the config's class order."""
  if export.PROBABILITIES not in outputs:
    raise validation.RequestError(
        f'the signature has no {export.PROBABILITIES!r} output to classify '
        'with; use :predict')
  probs = outputs[export.PROBABILITIES]
  probs = probs.reshape(len(probs), -1).astype(np.float64)
  classes = model.classes
  if probs.shape[1] == 1 and len(classes) == 2:
    positive = model.positive if model.positive in classes else classes[1]
    negative = [c for c in classes if c != positive][0]
    return [[[negative, 1.0 - p], [positive, p]]
            for p in probs[:, 0].tolist()]
  if probs.shape[1] == len(classes):
    return [[[c, p] for c, p in zip(classes, row)] for row in probs.tolist()]
  raise validation.RequestError(
      f'the model gives {probs.shape[1]} probabilities per row for '
      f'{len(classes)} classes; :classify cannot pair them, use :predict')


# ----------------------------------------------------------------------- app


def make_app(store: ModelStore, batcher: MicroBatcher,
             request_log: Optional[RequestLog], model_name: str,
             max_body_bytes: int, max_instances: int,
             body_timeout: float = 30.0) -> web.Application:
  # aiohttp's own body limit sits just above ours, so that our check (and its
  # 400 message) answers first.
  app = web.Application(middlewares=[json_errors],
                        client_max_size=max_body_bytes + 1)
  app[STORE] = store
  app[BATCHER] = batcher
  app[REQUEST_LOG] = request_log
  app[SETTINGS] = {'model_name': model_name, 'max_body_bytes': max_body_bytes,
                   'max_instances': max_instances,
                   'body_timeout': body_timeout}
  app.router.add_get('/healthz', healthz)
  app.router.add_get('/v1/models/{rest:.+}', get_model)
  app.router.add_post('/v1/models/{rest:.+}', post_model)
  return app
