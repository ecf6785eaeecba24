"""Connections of the REST server: what keeps hostile clients from taking it
down.

Every connection costs a file descriptor, and a process has a fixed number of
them. Left alone, clients that connect and never send a request (or send half
of one) would use them all up: then accept() fails, valid requests time out
and the version poller cannot open files. So:

* Idle timeout (`--idle-timeout`): a connection that has not sent a complete
  request head within that many seconds of connecting, or of its last
  response, is closed. Sending the head a byte at a time does not extend it.
  (aiohttp's keep-alive timer, which runs from the moment a connection is
  made.)
* Connection cap (`--max-connections`): at the cap, a new connection makes
  room by closing the connection that has been idle longest (no request in
  progress: never sent one, or between keep-alive requests). A client that
  connects to send a request is then served even while thousands of idle
  connections are opened against it. Only when every connection is busy with
  a request is the new one refused, with a 503 JSON error, and closed.
* The file-descriptor limit is raised to its hard limit at start-up, and the
  cap must leave room (RESERVED_FILES) for the model's files, the request log
  and the poller.
* Pressure is logged once, not once per connection: the first event of a
  kind is a warning, later ones are counted and summed up at most once a
  minute (and at shutdown).
* A request that is not HTTP (a bad method, a bad or duplicate
  Content-Length, a request line or header over the size limits) gets the
  API's JSON error, a 400 that names the problem without echoing the input,
  instead of aiohttp's plain text.

The body of a request is bounded in time by `--body-timeout` in app.py.
"""

import asyncio
import logging
import resource
import time
from typing import Any, Callable, Dict, Optional, Set

from aiohttp import web
from aiohttp import web_protocol

from serving import flags

log = logging.getLogger('serving')

# File descriptors kept free of connections: the model's files, the request
# log, the poller's directory walks, refusals being written.
RESERVED_FILES = 128
# Seconds a refused connection is kept open so that the client reads the 503
# (closing with its request unread would reset the connection instead).
_REFUSAL_LINGER_SECONDS = 1.0
# Refusals lingering at once; beyond this, a refusal is closed at once.
_MAX_LINGERING_REFUSALS = 64
SUMMARY_SECONDS = 60.0

_LIMIT_EVENTS = {
    'evicted': 'connection limit (--max-connections {cap}) reached: closing '
               'the longest-idle connections to make room for new ones',
    'refused': 'connection limit (--max-connections {cap}) reached with every '
               'connection busy: refusing new connections with 503',
    'malformed': 'malformed HTTP requests answered with 400',
    'accept': 'accept() failed for lack of file descriptors or memory',
}


class PressureLog:
  """Logs each kind of pressure once, then a count at most every `interval`
  seconds: an attack of thousands of connections is a few lines."""

  def __init__(self,
               cap: int,
               interval: float = SUMMARY_SECONDS,
               clock: Callable[[], float] = time.monotonic):
    self._cap = cap
    self._interval = interval
    self._clock = clock
    self._pending: Dict[str, int] = {}
    self._last: Dict[str, float] = {}

  def note(self, kind: str) -> None:
    now = self._clock()
    self._pending[kind] = self._pending.get(kind, 0) + 1
    last = self._last.get(kind)
    if last is None:
      self._last[kind] = now
      self._pending[kind] = 0
      log.warning(
          '%s; further such events are counted and logged at most '
          'once every %d s', _LIMIT_EVENTS[kind].format(cap=self._cap),
          self._interval)
    elif now - last >= self._interval:
      self._report(kind, now - last)

  def flush(self) -> None:
    """Logs what was counted and not yet logged (at shutdown)."""
    now = self._clock()
    for kind in list(self._pending):
      self._report(kind, now - self._last[kind])

  def _report(self, kind: str, seconds: float) -> None:
    count = self._pending.get(kind, 0)
    self._last[kind] = self._clock()
    self._pending[kind] = 0
    if count:
      log.warning('%s: %d times in the last %.0f s',
                  _LIMIT_EVENTS[kind].format(cap=self._cap), count, seconds)


class _Handler(web_protocol.RequestHandler):
  """aiohttp's connection handler, plus when it became idle, and JSON errors
  for requests that are not HTTP."""

  __slots__ = ('idle_since', 'evicted', '_pressure', '_guard')

  def __init__(self, manager: web.Server, guard: 'ConnectionGuard',
               pressure: PressureLog, **kwargs: Any):
    super().__init__(manager, **kwargs)
    self.idle_since = time.monotonic()
    self.evicted = False
    self._guard = guard
    self._pressure = pressure

  def evict(self) -> None:
    """Closes the connection to make room; one accepted but not yet set up
    is closed as soon as it is."""
    self.evicted = True
    self.force_close()

  def connection_made(self, transport: asyncio.BaseTransport) -> None:
    super().connection_made(transport)
    if self.evicted:
      self.force_close()

  def connection_lost(self, exc: Optional[BaseException]) -> None:
    self._guard.forget(self)
    super().connection_lost(exc)

  def is_idle(self) -> bool:
    """No request being handled and none waiting: closing it loses no
    work (the client reconnects for its next request)."""
    return not (getattr(self, '_request_in_progress', False) or
                getattr(self, '_messages', None))

  async def finish_response(self, request: web.BaseRequest,
                            resp: web.StreamResponse,
                            start_time: Optional[float]) -> Any:
    try:
      return await super().finish_response(request, resp, start_time)
    finally:
      self.idle_since = time.monotonic()

  def handle_error(self,
                   request: web.BaseRequest,
                   status: int = 500,
                   exc: Optional[BaseException] = None,
                   message: Optional[str] = None) -> web.StreamResponse:
    """aiohttp's answer to a request it could not parse (or to a failure
    outside the app's middleware), as the API's JSON error."""
    if status >= 500:
      log.error(
          'error handling a request from %s', request.remote, exc_info=exc)
      text = f'internal error: {type(exc).__name__}' if exc else (
          'internal error')
    else:
      self._pressure.note('malformed')
      text = f'malformed HTTP request: {describe_http_error(exc, message)}'
    if request.writer.output_size > 0:
      raise ConnectionError('response already started; cannot send the error')
    resp = web.json_response({'error': text}, status=status)
    resp.force_close()
    return resp


def describe_http_error(exc: Optional[BaseException],
                        message: Optional[str]) -> str:
  """What was wrong with a request aiohttp could not parse, in a few words,
  without the bytes the client sent."""
  name = type(exc).__name__ if exc is not None else ''
  known = {
      'BadHttpMethod': 'invalid method',
      'LineTooLong': 'request line or header field too long',
      'InvalidURLError': 'invalid URL',
      'ContentLengthError': 'body shorter than its Content-Length',
      'TransferEncodingError': 'invalid chunked transfer encoding',
      'ContentEncodingError': 'body cannot be decompressed',
      'BadStatusLine': 'invalid request line',
  }
  if name in known:
    return known[name]
  text = str(getattr(exc, 'message', '') or message or name or 'bad request')
  # aiohttp's messages may go on to quote the input: keep the first clause.
  first = text.strip().splitlines()[0] if text.strip() else 'bad request'
  first = first.split(':')[0].strip() or 'bad request'
  first = first.encode('ascii', 'backslashreplace').decode('ascii')
  return first[:120]


_REFUSAL_BODY = (b'{"error": "the server is at its connection limit with every '
                 b'connection busy; retry shortly"}')
_REFUSAL = (b'HTTP/1.1 503 Service Unavailable\r\n'
            b'Content-Type: application/json; charset=utf-8\r\n'
            b'Content-Length: ' + str(len(_REFUSAL_BODY)).encode() + b'\r\n'
            b'Retry-After: 1\r\nConnection: close\r\n\r\n' + _REFUSAL_BODY)


class _Refusal(asyncio.Protocol):
  """Answers 503 and closes: a connection beyond the cap."""

  lingering = 0

  def connection_made(self, transport: asyncio.BaseTransport) -> None:
    transport.write(_REFUSAL)  # type: ignore[attr-defined]
    if _Refusal.lingering >= _MAX_LINGERING_REFUSALS:
      transport.close()
      return
    _Refusal.lingering += 1
    self._counted = True
    if transport.can_write_eof():  # type: ignore[attr-defined]
      transport.write_eof()  # type: ignore[attr-defined]
    asyncio.get_running_loop().call_later(_REFUSAL_LINGER_SECONDS,
                                          transport.close)

  def data_received(self, data: bytes) -> None:
    pass  # the request is not read: it is refused whatever it says

  def connection_lost(self, exc: Optional[BaseException]) -> None:
    if getattr(self, '_counted', False):
      _Refusal.lingering -= 1
      self._counted = False


class ConnectionGuard:
  """The protocol factory of the listening socket: a handler per connection
  within the cap, room made by closing the longest-idle one at the cap, a
  503 refusal when every connection is busy.

  It counts the handlers it made itself, from the moment it makes them:
  asyncio accepts a burst of connections before any of them is set up, so
  the server's own list of connections lags behind.
  """

  def __init__(self, runner: web.AppRunner, max_connections: int,
               pressure: PressureLog):
    self._runner = runner
    self._max = max_connections
    self._pressure = pressure
    self._open: Set[_Handler] = set()

  def forget(self, handler: _Handler) -> None:
    self._open.discard(handler)

  def __call__(self) -> asyncio.Protocol:
    server = self._runner.server
    assert server is not None  # the runner is set up before the site starts
    if len(self._open) >= self._max:
      idle = [h for h in self._open if h.is_idle()]
      if not idle:
        self._pressure.note('refused')
        return _Refusal()
      victim = min(idle, key=lambda h: h.idle_since)
      self._open.discard(victim)
      victim.evict()
      self._pressure.note('evicted')
    # The keyword arguments aiohttp's own Server would give a handler.
    kwargs = dict(getattr(server, '_kwargs', {}))
    handler = _Handler(
        server, self, self._pressure, loop=asyncio.get_running_loop(), **kwargs)
    self._open.add(handler)
    return handler


class GuardedSite(web.TCPSite):
  """web.TCPSite whose connections go through a ConnectionGuard."""

  def __init__(self,
               runner: web.AppRunner,
               host: str,
               port: int,
               guard: ConnectionGuard,
               backlog: int = 128):
    super().__init__(runner, host, port, backlog=backlog)
    self._guard = guard

  async def start(self) -> None:
    await web.BaseSite.start(self)  # registers the site with the runner
    loop = asyncio.get_running_loop()
    self._server = await loop.create_server(
        self._guard,
        self._host,
        self._port,
        backlog=self._backlog,
        reuse_address=self._reuse_address,
        reuse_port=self._reuse_port)
    self._bound_port = self._server.sockets[0].getsockname()[1]


def raise_file_limit() -> int:
  """Raises the soft limit of open files to the hard limit; returns it."""
  soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
  if hard == resource.RLIM_INFINITY:
    hard = max(soft, 1 << 20)
  if soft != resource.RLIM_INFINITY and soft < hard:
    try:
      resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
      soft = hard
    except (ValueError, OSError):
      pass
  return soft if soft != resource.RLIM_INFINITY else hard


def default_max_connections(file_limit: int) -> int:
  return max(1, min(flags.DEFAULT_MAX_CONNECTIONS, file_limit - RESERVED_FILES))


def install_accept_error_handler(loop: asyncio.AbstractEventLoop,
                                 pressure: PressureLog) -> None:
  """accept() failing for lack of descriptors is noted as pressure (asyncio
  pauses accepting for a second by itself) rather than logged with a
  traceback each time; every other loop error goes to the default handler."""

  def handler(loop: asyncio.AbstractEventLoop, context: Dict[str, Any]) -> None:
    if 'out of system resource' in str(context.get('message', '')):
      pressure.note('accept')
      return
    loop.default_exception_handler(context)

  loop.set_exception_handler(handler)
