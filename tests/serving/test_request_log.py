"""The request log on its own: every served instance becomes one JSON line
that pipeline.skew can read, written off the event loop, rotated by size
without splitting a request, and complete after close()."""

import json
import os
import threading

import numpy as np

from serving.request_log import RequestLog


def _read(paths):
  lines = []
  for path in paths:
    with open(path, encoding='utf-8') as f:
      lines += [json.loads(line) for line in f]
  return lines


def _request(k, n=3):
  features = [{
      'age': k * 10 + i,
      'city': 'Zürich',
      'score': None
  } for i in range(n)]
  outputs = {
      'probabilities': np.array([[0.25]] * n, np.float32),
      'classes': np.array([b'>50K'] * n, object)
  }
  return features, outputs


def test_lines_rotation_and_close(tmp_path):
  path = str(tmp_path / 'logs' / 'requests.jsonl')
  log = RequestLog(path, max_bytes=2000, backups=100)
  threads = [
      threading.Thread(target=lambda t=t: [
          log.write(7, *_request(t * 100 + k)) for k in range(50)
      ]) for t in range(4)
  ]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  log.close()
  log.write(7, *_request(999))  # after close: dropped, no error

  names = sorted(os.listdir(tmp_path / 'logs'))
  assert names[0] == 'requests.jsonl' and 'requests.jsonl.1' in names
  paths = [str(tmp_path / 'logs' / n) for n in names]
  assert all(os.path.getsize(p) <= 2000 for p in paths)
  lines = _read(paths)
  assert len(lines) == 4 * 50 * 3
  ages = sorted(line['features']['age'] for line in lines)
  assert ages == sorted((t * 100 + k) * 10 + i
                        for t in range(4)
                        for k in range(50)
                        for i in range(3))
  first = lines[0]
  assert first['model_version'] == 7
  assert first['prediction'] == {'probability': 0.25, 'class': '>50K'}
  assert first['features']['city'] == 'Zürich'
  assert first['features']['score'] is None
  assert first['time'].endswith('+00:00')
  # A request's lines stay in one file: each file holds whole requests.
  for p in paths:
    ages = [line['features']['age'] for line in _read([p])]
    assert len(ages) % 3 == 0
    assert all(a // 10 == ages[i - i % 3] // 10 for i, a in enumerate(ages))


def test_oldest_file_dropped_after_backups(tmp_path):
  path = str(tmp_path / 'requests.jsonl')
  log = RequestLog(path, max_bytes=600, backups=2)
  for k in range(40):
    log.write(1, *_request(k, n=1))
  log.close()
  assert sorted(os.listdir(tmp_path)) == [
      'requests.jsonl', 'requests.jsonl.1', 'requests.jsonl.2'
  ]
  # The newest requests are kept, FILE.2 the oldest of them.
  kept = _read([path + '.2', path + '.1', path])
  ages = [line['features']['age'] for line in kept]
  assert ages == sorted(ages) and ages[-1] == 390


def test_an_entry_that_cannot_be_encoded_loses_only_itself(tmp_path, caplog):
  path = str(tmp_path / 'requests.jsonl')
  log = RequestLog(path, max_bytes=0)
  log.write(1, *_request(1, n=1))
  log.write(1, [{'age': object()}], {'predictions': np.array([[1.0]])})
  log.write(1, *_request(2, n=1))
  log.close()
  assert [line['features']['age'] for line in _read([path])] == [10, 20]
  assert 'cannot write a request' in caplog.text
