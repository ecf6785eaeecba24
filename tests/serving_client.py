"""A `python -m trainer.serve` child process on a free loopback port, and
the few HTTP calls the tests make to it."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

from tests.conftest import ROOT

_READY = re.compile(r'http://127\.0\.0\.1:(\d+)/v1/models/(\S+)')
_GRPC_READY = re.compile(r'over gRPC at 127\.0\.0\.1:(\d+)')


class Server:
  """A `python -m trainer.serve` child process and a tiny HTTP client.

  It serves `model_dir` (MDIR/export/<version>/); with
  source_flag='--model-base-path', a serving directory (BASE/<version>/).
  """

  def __init__(self, model_dir, workdir, *flags, source_flag='--model-dir'):
    os.makedirs(workdir, exist_ok=True)
    self.out_path = os.path.join(workdir, 'server.out')
    self.err_path = os.path.join(workdir, 'server.err')
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONWARNINGS='ignore')
    with open(self.out_path, 'w') as out, open(self.err_path, 'w') as err:
      self.proc = subprocess.Popen([
          sys.executable, '-m', 'trainer.serve', source_flag, model_dir,
          '--port', '0', '--grpc-port', '0', *flags
      ],
                                   cwd=str(ROOT),
                                   stdout=out,
                                   stderr=err,
                                   env=env)
    deadline = time.time() + 180
    while True:
      with open(self.out_path) as f:
        printed = f.read()
      match = _READY.search(printed)
      if match:
        self.port, self.name = int(match.group(1)), match.group(2)
        # Printed with the REST line; absent with --grpc-port -1.
        grpc_match = _GRPC_READY.search(printed)
        self.grpc_port = int(grpc_match.group(1)) if grpc_match else None
        break
      if self.proc.poll() is not None or time.time() > deadline:
        self.stop()
        raise AssertionError(f'server did not start:\n{self.stderr()[-3000:]}')
      time.sleep(0.2)

  def stderr(self):
    with open(self.err_path) as f:
      return f.read()

  def request(self, method, path, body=None, headers=None, timeout=60):
    """(status, parsed JSON body, response headers)."""
    if isinstance(body, (dict, list)):
      body = json.dumps(body)
    if isinstance(body, str):
      body = body.encode('utf-8')
    conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=timeout)
    try:
      conn.request(method, path, body=body, headers=headers or {})
      resp = conn.getresponse()
      data = resp.read()
      return resp.status, json.loads(data), dict(resp.getheaders())
    finally:
      conn.close()

  def raw(self, data, timeout=30):
    """Sends `data` as it is on a new connection and reads until the server
    closes it: (status, headers, body), or None when the server closed the
    connection without an answer."""
    return raw_request(self.port, data, timeout)

  def open_files(self):
    """The server process's open file descriptors (Linux)."""
    return len(os.listdir(f'/proc/{self.proc.pid}/fd'))

  def post(self, verb, body, version=None):
    where = f'/versions/{version}' if version is not None else ''
    status, doc, _ = self.request('POST',
                                  f'/v1/models/{self.name}{where}:{verb}', body)
    return status, doc

  def stop(self, sig=signal.SIGTERM, timeout=60):
    if self.proc.poll() is None:
      self.proc.send_signal(sig)
      try:
        self.proc.wait(timeout)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()
    return self.proc.returncode


def raw_request(port, data, timeout=30):
  """(status, {lower-case header: value}, body bytes) of the one answer to
  `data`, read until the server closes; None if it closes without one."""
  sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
  try:
    sock.sendall(data)
    received = b''
    while True:
      try:
        block = sock.recv(65536)
      except ConnectionResetError:
        break
      if not block:
        break
      received += block
  finally:
    sock.close()
  return parse_response(received)


def parse_response(received):
  if not received:
    return None
  head, _, body = received.partition(b'\r\n\r\n')
  lines = head.decode('latin-1').split('\r\n')
  status = int(lines[0].split()[1])
  headers = {}
  for line in lines[1:]:
    name, _, value = line.partition(':')
    headers[name.strip().lower()] = value.strip()
  if 'content-length' in headers:
    body = body[:int(headers['content-length'])]
  return status, headers, body
