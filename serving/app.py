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
from typing import Any, Awaitable, Callable, Dict, Optional

from aiohttp import web

from serving import request_checks
from serving.batcher import MicroBatcher
from serving.model_store import EXAMPLES
from serving.model_store import LoadedModel
from serving.model_store import ModelStore
from serving.model_store import RAW
from serving.outputs import check_classifier
from serving.outputs import check_regressor
from serving.outputs import classify_results
from serving.outputs import json_column
from serving.outputs import regress_results
from serving.request_log import RequestLog

log = logging.getLogger('serving')

_PATH = re.compile(r'^/v1/models/(?P<name>[^/:]+)'
                   r'(?:/versions/(?P<version>[^/:]+))?'
                   r'(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?/?$')
VERBS = ('predict', 'classify', 'regress')
# A version is a non-negative int64 written in ASCII digits (str.isdigit()
# would also take '²', which int() does not).
_VERSION = re.compile(r'[0-9]{1,19}')
_INT64_MAX = 2**63 - 1

STORE = web.AppKey('store', ModelStore)
BATCHER = web.AppKey('batcher', MicroBatcher)
REQUEST_LOG: web.AppKey[Optional[RequestLog]] = web.AppKey('request_log')
SETTINGS = web.AppKey('settings', dict)


def _dumps(obj: Any) -> str:
  return json.dumps(obj, ensure_ascii=False)


def error_response(status: int, message: str) -> web.Response:
  # A message may quote a URL or key the client sent: lone surrogates (from
  # undecodable bytes) are escaped so that the answer is valid UTF-8.
  message = message.encode('utf-8', 'backslashreplace').decode('utf-8')
  return web.json_response({'error': message}, status=status, dumps=_dumps)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request],
                                            Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
  """Every error as {"error": ...}; nothing a client sends escapes as a
  traceback or stops the server."""
  try:
    return await handler(request)
  except request_checks.RequestError as e:
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
  except Exception as e:  # pylint: disable=broad-except  (logged, a 500)
    log.exception('error serving %s %s', request.method, request.path)
    return error_response(500, f'internal error: {type(e).__name__}')


# ------------------------------------------------------------------ handlers


async def healthz(request: web.Request) -> web.Response:
  model = request.app[STORE].current
  if model is None:
    return error_response(503, 'no model loaded')
  return web.json_response({
      'status': 'ok',
      'model': request.app[SETTINGS]['model_name'],
      'version': str(model.version)
  })


def _route(request: web.Request) -> Dict[str, Optional[str]]:
  match = _PATH.match(request.path)
  if not match:
    raise request_checks.RequestError(f'no such resource: {request.path}', 404)
  parts = match.groupdict()
  name = request.app[SETTINGS]['model_name']
  if parts['name'] != name:
    raise request_checks.RequestError(
        f'Servable not found for request: Latest({parts["name"]}); this '
        f'server serves model {name!r}', 404)
  version = parts['version']
  if version is not None and not (_VERSION.fullmatch(version) and
                                  int(version) <= _INT64_MAX):
    raise request_checks.RequestError(
        f'version must be a non-negative integer, got '
        f'{request_checks.describe(version)[:80]}', 404)
  return parts


def _model_for(request: web.Request, version: Optional[str]) -> LoadedModel:
  """The model to answer with, taken once: a swap later does not affect it."""
  model = request.app[STORE].current
  if model is None:
    raise request_checks.RequestError('no model loaded', 503)
  if version is not None and int(version) != model.version:
    name = request.app[SETTINGS]['model_name']
    raise request_checks.RequestError(
        f'Servable not found for request: Specific({name}, {int(version)}); '
        f'version {model.version} is served', 404)
  return model


async def get_model(request: web.Request) -> web.Response:
  parts = _route(request)
  if parts['verb'] is not None:
    raise request_checks.RequestError(f':{parts["verb"]} needs POST', 405)
  name = request.app[SETTINGS]['model_name']
  if parts['metadata']:
    model = _model_for(request, parts['version'])
    return web.json_response(
        {
            'model_spec': {
                'name': name,
                'signature_name': '',
                'version': str(model.version)
            },
            'metadata': {
                'signature_def': {
                    'signature_def': model.signature_defs
                }
            },
        },
        dumps=_dumps)
  version = int(parts['version']) if parts['version'] is not None else None
  entries = request.app[STORE].status(version)
  if not entries:
    what = f'version {version} of ' if version is not None else ''
    raise request_checks.RequestError(
        f'Could not find any versions of model {name}'
        if version is None else f'Could not find {what}model {name}', 404)
  return web.json_response({'model_version_status': entries})


async def _read_body(request: web.Request) -> Any:
  settings = request.app[SETTINGS]
  limit = settings['max_body_bytes']
  if request.content_length is not None and request.content_length > limit:
    raise request_checks.RequestError(
        f'request body is {request.content_length} bytes; the limit is '
        f'{limit} (--max-body-bytes)')
  timeout = settings['body_timeout']
  try:
    body = await asyncio.wait_for(request.read(), timeout)
  except web.HTTPRequestEntityTooLarge:
    raise request_checks.RequestError(
        f'request body is over the limit of {limit} bytes '
        '(--max-body-bytes)') from None
  except asyncio.TimeoutError:
    _abandon_body(request)
    raise request_checks.RequestError(
        f'request body not received within {timeout:g} s '
        '(--body-timeout)',
        408,
        close=True) from None
  except (ConnectionError, web.HTTPException):
    raise
  except Exception as e:  # noqa: BLE001 - an unreadable body is a 400
    # A body aiohttp cannot read: bad chunked encoding, undecompressable
    # Content-Encoding, cut short.
    _abandon_body(request)
    reason = str(e).strip().splitlines()[-1].strip() if str(e).strip() else ''
    raise request_checks.RequestError(
        'request body cannot be read' + (f': {reason[:100]}' if reason else ''),
        close=True) from None
  return request_checks.parse_json(body)


def _abandon_body(request: web.Request) -> None:
  """Reads no more of a body that failed: the answer closes the connection,
  and aiohttp does not linger to drain (and re-raise) what is left."""
  request.content.feed_eof()


async def post_model(request: web.Request) -> web.Response:
  parts = _route(request)
  verb = parts['verb']
  if verb is None:
    raise request_checks.RequestError(
        f'POST {request.path}: expected :predict, :classify or :regress at '
        'the end of the URL', 404)
  if verb not in VERBS:
    raise request_checks.RequestError(
        f'unknown method :{verb}; expected :predict, :classify or :regress',
        404)
  model = _model_for(request, parts['version'])
  obj = await _read_body(request)
  settings = request.app[SETTINGS]
  if verb == 'predict':
    rows = request_checks.parse_predict(obj, model.schema,
                                        settings['max_instances'])
    signature = request_checks.check_signature(rows.signature_name, RAW,
                                               model.signature_names)
  else:
    if verb == 'classify':
      check_classifier(model)
    else:
      check_regressor(model)
    rows = request_checks.parse_classify(obj, model.schema,
                                         settings['max_instances'], verb)
    signature = request_checks.check_signature(rows.signature_name, EXAMPLES,
                                               model.signature_names)
  outputs = await request.app[BATCHER].predict(model, signature, rows.rows)
  columns = {name: json_column(value) for name, value in outputs.items()}
  n = len(rows)
  body: Dict[str, Any]
  if verb == 'classify':
    body = {'results': classify_results(model, outputs)}
  elif verb == 'regress':
    body = {'results': regress_results(outputs)}
  elif rows.columnar:
    body = {'outputs': columns}
  else:
    body = {
        'predictions': [{
            name: column[i] for name, column in columns.items()
        } for i in range(n)]
    }
  request_log = request.app[REQUEST_LOG]
  if request_log is not None:
    request_log.write(model.version, rows.received, outputs)
  version = str(model.version)
  body['model_version'] = version
  return web.json_response(
      body, headers={'X-Model-Version': version}, dumps=_dumps)


# ----------------------------------------------------------------------- app


def make_app(store: ModelStore,
             batcher: MicroBatcher,
             request_log: Optional[RequestLog],
             model_name: str,
             max_body_bytes: int,
             max_instances: int,
             body_timeout: float = 30.0) -> web.Application:
  # aiohttp's own body limit sits just above ours, so that our check (and its
  # 400 message) answers first.
  app = web.Application(
      middlewares=[json_errors], client_max_size=max_body_bytes + 1)
  app[STORE] = store
  app[BATCHER] = batcher
  app[REQUEST_LOG] = request_log
  app[SETTINGS] = {
      'model_name': model_name,
      'max_body_bytes': max_body_bytes,
      'max_instances': max_instances,
      'body_timeout': body_timeout
  }
  app.router.add_get('/healthz', healthz)
  app.router.add_get('/v1/models/{rest:.+}', get_model)
  app.router.add_post('/v1/models/{rest:.+}', post_model)
  return app
