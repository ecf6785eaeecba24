"""Hostile clients against the REST server: nothing takes it down.

A real `python -m trainer.serve` child process, over real sockets, scaled
down to stay fast: a connection cap of 24 and idle and body timeouts of 2 s
(flags), then a few hundred idle and half-sent connections. Throughout, valid
requests are answered; the server's file descriptors stay bounded; stalled
connections are closed; the pressure is logged once. Requests that are not
HTTP, URLs of any characters and JSON bodies of any shape (property-based,
hypothesis) each get a 2xx or a 4xx JSON error, never a 5xx, and the server
answers a valid request afterwards. The request checks themselves are fuzzed
in-process too, with many more examples.
"""

import json
import math
import socket
import time
import urllib.parse

from hypothesis import given
from hypothesis import strategies as st
import numpy as np
import pytest

from core.config import load_config
from serving import request_checks
from tests.conftest import ROOT
from tests.conftest import TOY_CONFIG
from tests.fuzzing import fuzz_settings
from tests.fuzzing import integers
from tests.fuzzing import json_values
from tests.serving_client import parse_response
from tests.serving_client import raw_request
from tests.serving_client import Server

MAX_CONNECTIONS = 24
IDLE_SECONDS = 2
FLOAT32_MAX = float(np.finfo(np.float32).max)
VALID = {'height': 170.0, 'visits': 3, 'city': 'paris', 'color': 'red'}
CONFIGS = [
    TOY_CONFIG,
    str(ROOT / 'tests' / 'data' / 'mixed.yaml'),
    str(ROOT / 'tests' / 'data' / 'events.yaml')
]


@pytest.fixture(scope='module')
def server(trainer_toy_model, tmp_path_factory):
  model_dir, _ = trainer_toy_model
  s = Server(model_dir, str(tmp_path_factory.mktemp('hostile_server')),
             '--poll-seconds', '0', '--max-connections', str(MAX_CONNECTIONS),
             '--idle-timeout', str(IDLE_SECONDS), '--body-timeout',
             str(IDLE_SECONDS), '--max-body-bytes', '65536', '--max-instances',
             '20')
  yield s
  assert s.stop() == 0


def _head(method, path, length=None, extra=b''):
  head = method + b' ' + path + b' HTTP/1.1\r\nHost: localhost\r\n' + extra
  if length is not None:
    head += b'Content-Length: %d\r\n' % length
  return head + b'Connection: close\r\n\r\n'


def _post(path, body):
  return _head(b'POST', path, len(body)) + body


def assert_valid_request_served(server):
  status, doc, _ = server.request(
      'POST',
      f'/v1/models/{server.name}:predict', {'instances': [VALID]},
      timeout=30)
  assert status == 200, doc
  assert 0.0 <= doc['predictions'][0]['probabilities'][0] <= 1.0


def assert_json_error(answer, statuses=range(400, 500)):
  assert answer is not None, 'closed without an answer'
  status, headers, body = answer
  assert status in statuses, (status, body[:300])
  assert headers['content-type'].startswith('application/json')
  doc = json.loads(body)
  assert set(doc) == {'error'} and doc['error'], doc
  return doc['error']


def _closed_by_peer(sock):
  try:
    return sock.recv(1) == b''
  except ConnectionResetError:
    return True
  except BlockingIOError:
    return False


# ------------------------------------------------------- connection floods


def test_idle_and_half_sent_connections_do_not_starve_valid_requests(server):
  assert_valid_request_served(server)
  baseline = server.open_files()
  attack = []
  try:
    for _ in range(3):
      for i in range(100):
        sock = socket.create_connection(('127.0.0.1', server.port))
        if i % 3 == 1:  # half a request head, then nothing
          sock.sendall(b'POST /v1/models/toy:predict HTTP/1.1\r\nHost: x')
        elif i % 3 == 2:  # a head sent a byte at a time, stalled
          sock.sendall(b'G')
        attack.append(sock)
      # Valid clients are answered while the cap is full of idle sockets.
      for _ in range(3):
        assert_valid_request_served(server)
      assert server.open_files() <= baseline + MAX_CONNECTIONS + 16
    # At the cap, the longest-idle connections were closed to make room.
    for sock in attack:
      sock.setblocking(False)
    assert sum(_closed_by_peer(s) for s in attack) >= 300 - MAX_CONNECTIONS
    # The rest are closed at the idle timeout, trickling or not.
    time.sleep(IDLE_SECONDS + 3)
    assert all(_closed_by_peer(s) for s in attack)
  finally:
    for sock in attack:
      sock.close()
  assert_valid_request_served(server)
  err = server.stderr()
  assert err.count('connection limit') == 1  # once, not per connection
  assert 'Traceback' not in err and len(err) < 20000


def test_connections_beyond_the_cap_when_all_are_busy_get_503(server):
  busy = []
  try:
    for _ in range(MAX_CONNECTIONS):
      sock = socket.create_connection(('127.0.0.1', server.port))
      # A complete head announcing a body that never comes: a request in
      # progress, which is never closed to make room.
      sock.sendall(_head(b'POST', b'/v1/models/toy:predict', 100) + b'{')
      busy.append(sock)
    time.sleep(1)  # every head parsed: each connection is busy
    error = assert_json_error(
        raw_request(
            server.port,
            _post(b'/v1/models/toy:predict',
                  json.dumps({
                      'instances': [VALID]
                  }).encode())), [503])
    assert 'connection limit' in error
    # Each stalled body gets a 408 at the body timeout, and then the server
    # answers again.
    for sock in busy:
      sock.settimeout(IDLE_SECONDS + 10)
      received = b''
      while True:
        block = sock.recv(65536)
        if not block:
          break
        received += block
      assert 'not received within' in assert_json_error(
          parse_response(received), [408])
  finally:
    for sock in busy:
      sock.close()
  assert_valid_request_served(server)


# ------------------------------------------------------- not HTTP, odd URLs


@pytest.mark.parametrize('data, fragment', [
    (b'FOO<script> / HTTP/1.1\r\nHost: x\r\n\r\n', 'invalid method'),
    (b'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n',
     'Content-Length'),
    (b'POST /v1/models/toy:predict HTTP/1.1\r\nHost: x\r\n'
     b'Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}', 'Content-Length'),
    (b'GET /' + b'a' * 20000 + b' HTTP/1.1\r\nHost: x\r\n\r\n', 'too long'),
    (b'GET / HTTP/1.1\r\nHost: x\r\nX-Big: ' + b'b' * 20000 + b'\r\n\r\n',
     'too long'),
    (b'GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n', 'URL'),
    (b'POST /v1/models/toy:predict HTTP/1.1\r\nHost: x\r\n'
     b'Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n', 'chunk'),
    (b'POST /v1/models/toy:predict HTTP/1.1\r\nHost: x\r\n'
     b'Content-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello',
     'cannot be read'),
])
def test_malformed_http_gets_the_api_json_error(server, data, fragment):
  error = assert_json_error(raw_request(server.port, data))
  assert fragment in error
  assert '<script>' not in error and 'aaaa' not in error
  assert_valid_request_served(server)


@pytest.mark.parametrize('path', [
    '/v1/models/toy/versions/%C2%B2',
    '/v1/models/toy/versions/%E2%91%A0',
    '/v1/models/toy/versions/%C2%B2/metadata',
    '/v1/models/toy/versions/%E2%91%A0:predict',
    '/v1/models/toy/versions/%C2%B2:classify',
    '/v1/models/toy/versions/' + '9' * 5000,
    '/v1/models/toy/versions/99999999999999999999',
    '/v1/models/toy/versions/-1',
    '/v1/models/toy/versions/%00',
    '/v1/models/%FF%FE',
    '/v1/models/%ED%A0%80:predict',
    '/v1/models/toy/..',
    '/v1/models/toy:%C2%B2',
    '/v1/models//versions/1',
    '/%2e%2e/etc/passwd',
])
def test_any_client_path_gets_a_4xx(server, path):
  for method in (b'GET', b'POST'):
    assert_json_error(
        raw_request(
            server.port,
            _post(path.encode(), b'{}') if method == b'POST' else _head(
                method, path.encode())))


# ---------------------------------------------------- property-based, HTTP


def _instances():
  """Valid instances with some values replaced by anything, keys added or
  dropped."""
  return st.tuples(
      st.fixed_dictionaries({},
                            optional={
                                k: st.just(v) for k, v in VALID.items()
                            }),
      st.dictionaries(
          st.sampled_from(list(VALID) + ['outcome', 'x', '']),
          json_values,
          max_size=3)).map(lambda pair: dict(pair[0], **pair[1]))


def request_bodies():
  objects = st.one_of(
      json_values,
      st.fixed_dictionaries({'instances': st.lists(_instances(), max_size=4)}),
      st.fixed_dictionaries({
          'inputs':
              st.dictionaries(
                  st.sampled_from(list(VALID) + ['history', 'y']),
                  st.lists(json_values, max_size=3),
                  max_size=5)
      }),
      st.fixed_dictionaries({'examples': st.lists(_instances(), max_size=3)},
                            optional={
                                'context':
                                    st.dictionaries(
                                        st.sampled_from(list(VALID)),
                                        json_values,
                                        max_size=2),
                                'signature_name':
                                    json_values
                            }),
      st.fixed_dictionaries({
          'instances':
              st.lists(_instances(), max_size=2),
          'signature_name':
              st.sampled_from(['serving_default', 'serving_raw', '', 'nope'])
      }),
  )
  return st.one_of(
      objects.map(lambda o: json.dumps(o).encode('utf-8', 'surrogatepass')),
      st.binary(max_size=200),
      st.text(max_size=200).map(lambda t: t.encode('utf-8', 'surrogatepass')),
      st.builds(
          lambda n: b'{"instances": [{"height": %s, "visits": 3, '
          b'"city": "a", "color": "red"}]}' % n.encode(),
          st.sampled_from([
              '1e999', '-1e999', 'NaN', '1' * 5000, '3.5e38', '-0', '1E+2',
              '0.0000001e-320'
          ])))


@fuzz_settings(40)
@given(
    body=request_bodies(),
    verb=st.sampled_from([
        ':predict', ':classify', ':regress', '/versions/1:predict', '',
        '/metadata'
    ]))
def test_any_json_body_gets_2xx_or_a_4xx_json_error(server, body, verb):
  answer = raw_request(server.port,
                       _post(b'/v1/models/toy' + verb.encode(), body))
  if answer[0] >= 300:
    assert_json_error(answer)
  else:
    json.loads(answer[2])


_URL_CHARS = st.characters(blacklist_characters='\r\n', codec='utf-8')


@fuzz_settings(40)
@given(
    path=st.one_of(
        st.text(_URL_CHARS, max_size=60).map(lambda t: '/' + t),
        st.text(_URL_CHARS, max_size=30).map(lambda t: '/v1/models/toy/' + t),
        st.text(_URL_CHARS,
                max_size=30).map(lambda t: f'/v1/models/{t}:predict'),
        st.binary(max_size=12).map(lambda b: '/v1/models/toy/versions/' + ''.
                                   join(f'%{x:02X}' for x in b)),
        # Versions spelled with any digit-like characters ('²', '①', '٣').
        st.tuples(
            st.text(
                st.one_of(
                    st.characters(categories=('Nd', 'No')),
                    st.sampled_from('0123456789²³①⑨٣߀፩𝟙')),
                min_size=1,
                max_size=4),
            st.sampled_from(['', '/metadata', ':predict', ':classify'
                            ])).map(lambda p: '/v1/models/toy/versions/' +
                                    urllib.parse.quote(p[0]) + p[1])),
    method=st.sampled_from(
        [b'GET', b'POST', b'PUT', b'DELETE', b'HEAD', b'OPTIONS', b'PATCH']))
def test_any_url_and_method_get_2xx_or_a_4xx_json_error(server, path, method):
  data = _head(method, path.encode('utf-8', 'surrogatepass'), 2) + b'{}'
  answer = raw_request(server.port, data)
  assert answer is not None
  if method == b'HEAD':
    assert answer[0] < 500
  elif answer[0] >= 300:
    assert_json_error(answer)


def test_server_still_serves_after_the_fuzzing(server):
  assert_valid_request_served(server)
  assert server.proc.poll() is None
  assert 'Traceback' not in server.stderr()


# ---------------------------------------------- property-based, in-process


def _check_rows(rows, schema):
  for row in rows.rows:
    for name, value in row.items():
      if value is None:
        continue
      kind = schema.kinds.get(name)
      if name in schema.lists:
        assert all(isinstance(v, str) for v in value)
      elif kind == 'int':
        assert isinstance(value, int) and -2**63 <= value < 2**63
      elif kind == 'float':
        assert math.isfinite(value) and abs(value) <= FLOAT32_MAX
      else:
        value.encode('utf-8')
  json.dumps(rows.received)  # what the request log writes


@pytest.mark.parametrize('config_path', CONFIGS)
def test_request_checks_accept_or_name_the_problem(config_path):
  """Any body: checked rows within their types, or a RequestError (a 4xx
  with a message); never another exception."""
  config = load_config(config_path)
  schema = request_checks.RowSchema(config)
  names = schema.names + [config.label.column, 'history', 'x']
  value = st.one_of(
      json_values, integers, st.floats(),
      st.sampled_from(
          ['2024-05-01T10:00:00Z', '1e20', 'yes', 'a|b', 253402300800, 1e300]))
  instance = st.dictionaries(st.sampled_from(names), value, max_size=8)
  body = st.one_of(
      json_values,
      st.fixed_dictionaries({'instances': st.lists(instance, max_size=3)}),
      st.fixed_dictionaries({
          'inputs':
              st.dictionaries(
                  st.sampled_from(names), st.lists(value, max_size=3))
      }),
      st.fixed_dictionaries({'examples': st.lists(instance, max_size=3)},
                            optional={'context': instance}))

  @fuzz_settings(150)
  @given(body.map(json.dumps), st.sampled_from(['predict', 'classify']))
  def prop(text, verb):
    try:
      obj = request_checks.parse_json(text.encode('utf-8', 'surrogatepass'))
      if verb == 'predict':
        rows = request_checks.parse_predict(obj, schema, 20)
      else:
        rows = request_checks.parse_classify(obj, schema, 20)
    except request_checks.RequestError as e:
      assert 400 <= e.status < 500 and e.message
      return
    _check_rows(rows, schema)

  prop()


def test_pressure_is_logged_once_then_summed_up(caplog):
  from serving import connections  # pylint: disable=g-import-not-at-top
  now = [100.0]
  log = connections.PressureLog(24, interval=60, clock=lambda: now[0])
  with caplog.at_level('WARNING', logger='serving'):
    for _ in range(5000):
      log.note('evicted')
      now[0] += 0.01  # 50 s in all
    assert len(caplog.records) == 1
    assert '--max-connections 24' in caplog.records[0].getMessage()
    now[0] += 15
    log.note('evicted')  # past the interval: one summary line
    log.note('refused')
    log.flush()
  messages = [r.getMessage() for r in caplog.records]
  assert len(messages) == 3, messages
  assert '5000 times' in messages[1]
  assert 'refusing' in messages[2]
