"""trainer.predict: raw CSV rows scored by the export alone, bad rows reported."""

import json
import os
import subprocess
import sys
import threading

import pytest
import tensorflow as tf

from core.config import load_config
from core.errors import UserError
from core.layout import resolve_export
from tests import datagen
from tests.conftest import CENSUS_CONFIG
from tests.conftest import ROOT
from tests.conftest import TOY_CONFIG
from trainer import predict

ADULT_ROW = ('39, State-gov, 77516, Bachelors, 13, Never-married, '
             'Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, '
             'United-States, <=50K.')


def _parse(serialized):
  return tf.train.Example.FromString(serialized).features.feature


@pytest.fixture(scope='module')
def census_encoder():
  return predict.RowEncoder(load_config(CENSUS_CONFIG))


def test_encoder_with_and_without_label(census_encoder):
  fields = census_encoder.split(ADULT_ROW)
  serialized, label = census_encoder.encode(fields)
  assert label == '<=50K'  # alias applied
  f = _parse(serialized)
  assert 'income_bracket' not in f
  assert f['age'].int64_list.value == [39]
  assert f['workclass'].bytes_list.value == [b'State-gov']
  without_label = census_encoder.split(ADULT_ROW.rsplit(',', 1)[0])
  serialized2, label2 = census_encoder.encode(without_label)
  assert label2 is None and serialized2 == serialized


def test_encoder_leaves_missing_values_out(census_encoder):
  row = ADULT_ROW.replace('State-gov', '?').replace('77516', ' ')
  f = _parse(census_encoder.encode(census_encoder.split(row))[0])
  assert 'workclass' not in f and 'fnlwgt' not in f
  row = ADULT_ROW.replace('39,', '39.0,', 1)
  assert _parse(census_encoder.encode(
      census_encoder.split(row))[0])['age'].int64_list.value == [39]


@pytest.mark.parametrize('row, message', [
    (ADULT_ROW.replace('39,', 'forty,', 1), 'age'),
    (ADULT_ROW.replace('39,', '39.5,', 1), 'not an integer'),
    (ADULT_ROW.replace('39,', 'inf,', 1), 'finite'),
    ('1, 2, 3', 'expected 14 or 15 fields'),
    (ADULT_ROW.replace('Bachelors', '"Bach'), 'cannot split'),
])
def test_encoder_rejects_bad_rows(census_encoder, row, message):
  with pytest.raises(predict.RowError, match=message):
    census_encoder.encode(census_encoder.split(row))


def test_encoder_uses_header_names():
  enc = predict.RowEncoder(load_config(TOY_CONFIG))
  enc.set_header(['color', 'height', 'city'])  # any order, label left out
  serialized, label = enc.encode(['blue', '180.5', 'oslo'])
  f = _parse(serialized)
  assert label is None and 'visits' not in f
  assert f['height'].float_list.value == [180.5]
  with pytest.raises(UserError, match='unknown column'):
    enc.set_header(['color', 'shoe_size'])


def test_predict_cli_end_to_end(trainer_toy_model, tmp_path):
  model_dir, _ = trainer_toy_model
  good = datagen.toy_rows(30, seed=99)
  lines = ['# scored by the exported model alone', ''] + good[:10] + [
      '181.0, 4, oslo, red, row x, yes',
      '  181.0 ,4,  oslo  , red ,row y,yes',  # stray spaces
      '?, ?, ?, ?, ?, no',  # every feature missing
      '170, 5, atlantis, purple, z, no',  # unseen categories
      '1e12, 99999999, rome, blue, big, yes',  # out of range
      'tall, 3, oslo, red, bad number, no',  # bad row
      '1, 2, 3',  # wrong arity
  ] + good[10:]
  path = datagen.write_lines(
      str(tmp_path / 'raw.csv'), lines, header=datagen.TOY_HEADER)
  out = str(tmp_path / 'preds.jsonl')
  env = dict(
      os.environ,
      TF_CPP_MIN_LOG_LEVEL='2',
      PYTHONWARNINGS='ignore',
      PYTHONPATH=str(ROOT))
  proc = subprocess.run([
      sys.executable, '-m', 'trainer.predict', '--model-dir', model_dir,
      '--input', path, '--output', out, '--batch-size', '8'
  ],
                        cwd=str(ROOT),
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '37 rows, 35 scored, 2 with errors' in proc.stderr
  # Renamed into place whole: no staging file is left beside it.
  assert sorted(os.listdir(tmp_path)) == ['preds.jsonl', 'raw.csv']
  with open(out) as f:
    results = [json.loads(line) for line in f]
  assert len(results) == 37
  lines_no = [r['line'] for r in results]
  assert lines_no == sorted(lines_no)  # input order kept across batches
  errors = [r for r in results if 'error' in r]
  assert [e['raw'] for e in errors
         ] == ['tall, 3, oslo, red, bad number, no', '1, 2, 3']
  assert 'height' in errors[0]['error'] and 'fields' in errors[1]['error']
  scored = [r for r in results if 'error' not in r]
  # Classes follow the threshold stored in the export.
  threshold = resolve_export(model_dir).metadata['threshold']
  for r in scored:
    assert 0.0 <= r['probability'] <= 1.0
    assert r['class'] == ('yes' if r['probability'] >= threshold else 'no')
    assert r['label'] in ('yes', 'no')
  clean, spaced = scored[10], scored[11]
  assert clean['probability'] == spaced['probability']

  # The same rows through the in-process Predictor give the same numbers.
  predictor = predict.Predictor(model_dir)
  mine = []
  predict.predict_file(predictor, path, mine.append, batch_size=1000)
  assert [r.get('probability') for r in mine
         ] == pytest.approx([r.get('probability') for r in results], abs=1e-7)


def test_predict_writes_into_a_pipe_as_it_scores(trainer_toy_model, tmp_path):
  # A path that is not a regular file is written directly, not staged
  # beside it and renamed over it.
  model_dir, _ = trainer_toy_model
  path = datagen.write_lines(
      str(tmp_path / 'raw.csv'),
      datagen.toy_rows(20, seed=5),
      header=datagen.TOY_HEADER)
  fifo = str(tmp_path / 'fifo')
  os.mkfifo(fifo)
  received = []
  reader = threading.Thread(
      target=lambda: received.extend(open(fifo).read().splitlines()))
  reader.start()
  try:
    totals = predict.run(
        ['--model-dir', model_dir, '--input', path, '--output', fifo])
  finally:
    if reader.is_alive():  # the run failed before opening the pipe
      with open(fifo, 'w'):
        pass
    reader.join()
  assert totals['scored'] == 20
  assert len(received) == 20 and 'probability' in json.loads(received[0])
  assert sorted(os.listdir(tmp_path)) == ['fifo', 'raw.csv']


def test_predict_without_a_model_is_a_usage_error(tmp_path, capsys):
  path = datagen.write_lines(
      str(tmp_path / 'x.csv'), ['1, 2, a, red, n, no'],
      header=datagen.TOY_HEADER)
  rc = predict.main(['--model-dir', str(tmp_path / 'none'), '--input', path])
  assert rc == 2
  assert 'no exported model' in capsys.readouterr().err


def test_an_output_that_cannot_be_written_is_one_line(trainer_toy_model,
                                                      tmp_path, capsys):
  model_dir, _ = trainer_toy_model
  path = datagen.write_lines(
      str(tmp_path / 'x.csv'), ['1, 2, a, red, n, no'],
      header=datagen.TOY_HEADER)
  for output, says in ((tmp_path, 'is a directory'),
                       (tmp_path / 'no' / 'p.jsonl', 'cannot be written')):
    rc = predict.main(
        ['--model-dir', model_dir, '--input', path, '--output',
         str(output)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(f'predict: error: --output {output}: {says}'), err
    assert len(err.splitlines()) == 1
  assert sorted(os.listdir(tmp_path)) == ['x.csv']


@pytest.mark.parametrize('value', [
    '9223372036854775808', '-9223372036854775809', '99999999999999999999',
    '1e300', '9' * 5000
])
def test_encoder_rejects_integers_beyond_int64(census_encoder, value):
  row = ADULT_ROW.replace('77516', value)
  with pytest.raises(
      predict.RowError, match='fnlwgt: .* does not fit in a 64-bit integer'):
    census_encoder.encode(census_encoder.split(row))
  row = ADULT_ROW.replace('77516', '9223372036854775807')
  assert _parse(census_encoder.encode(
      census_encoder.split(row))[0])['fnlwgt'].int64_list.value == [2**63 - 1]


def test_hostile_rows_are_error_lines_not_a_crash(trainer_toy_model, tmp_path):
  """Numbers beyond their column's type, a line over max_line_bytes: each an
  error line with a bounded raw; a byte-order mark costs no row."""
  model_dir, _ = trainer_toy_model
  good = datagen.toy_rows(6, seed=4)
  hostile = [
      '170, 9223372036854775808, oslo, red, x, no', '1e39, 3, oslo, red, x, no',
      '1e309, 3, oslo, red, x, no', '170, 1e300, oslo, red, x, no',
      '170, 3, oslo, red, ' + 'x' * 5000 + ', no'
  ]
  path = tmp_path / 'raw.csv'
  path.write_bytes(b'\xef\xbb\xbf' + '\n'.join([datagen.TOY_HEADER] + good +
                                               hostile).encode('utf-8') + b'\n')
  results = []
  counts = predict.predict_file(
      predict.Predictor(model_dir), str(path), results.append)
  assert counts == {'rows': 11, 'scored': 6, 'errors': 5}
  errors = [r for r in results if 'error' in r]
  assert [r['line'] for r in errors] == [8, 9, 10, 11, 12]
  assert ('64-bit integer' in errors[0]['error'] and
          '64-bit integer' in errors[3]['error'])
  assert '32-bit float' in errors[1]['error']
  assert '32-bit float' in errors[2]['error']
  assert 'max_line_bytes' in errors[4]['error']
  assert len(errors[4]['raw']) == 4096
