"""python -m pipeline.preprocess end to end: real Adult files and small data.

What a user relies on: every input line is accounted for, the output layout is
the documented one, runs are reproducible, analyzers only see train, and bad
input fails with one clear line and no output directory that looks finished.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

from apache_beam.options.pipeline_options import DirectOptions
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2
import tensorflow_transform as tft
import yaml

from core.config import load_config
from pipeline import cleanse
from pipeline import preprocess
from pipeline import split
from pipeline.sources import RawChunk
from tests import datagen
from tests.conftest import CENSUS_CONFIG
from tests.conftest import ROOT
from tests.conftest import signal_when
from tests.conftest import TOY_CONFIG

pytestmark = pytest.mark.long


def _count_records(pattern):
  return sum(1 for path in glob.glob(pattern)
             for _ in tf.data.TFRecordDataset(path, compression_type='GZIP'))


def _data_bytes(out):
  files = sorted(glob.glob(os.path.join(out, 'data', '*')))
  return {os.path.basename(f): open(f, 'rb').read() for f in files}


def _decoded(out, split_name):
  """Transformed examples of a split as dicts, in a canonical order."""
  rows = []
  for path in sorted(glob.glob(os.path.join(out, 'data', split_name + '-*'))):
    for record in tf.data.TFRecordDataset(path, compression_type='GZIP'):
      example = tf.train.Example.FromString(record.numpy())
      row = {}
      for key, feature in example.features.feature.items():
        values = feature.float_list.value or feature.int64_list.value
        row[key] = values[0]
      rows.append(row)

  def ints(r):
    return tuple(v for _, v in sorted(r.items()) if isinstance(v, int))

  def floats(r):
    return tuple(
        round(v, 4) for _, v in sorted(r.items()) if isinstance(v, float))

  return sorted(rows, key=lambda r: (ints(r), floats(r)))


def _graph_constants(out):
  """Every constant in the transform graph: where analyzer results live."""
  model = saved_model_pb2.SavedModel()
  with open(os.path.join(out, 'transform_fn', 'saved_model.pb'), 'rb') as f:
    model.ParseFromString(f.read())
  consts = []
  for graph in [m.graph_def for m in model.meta_graphs]:
    nodes = list(graph.node)
    for fn in graph.library.function:
      nodes.extend(fn.node_def)
    for node in nodes:
      if node.op == 'Const' and 'value' in node.attr:
        tensor = node.attr['value'].tensor
        if tensor.dtype == tf.string.as_datatype_enum:
          # String constants hold temporary paths of this run; analyzer
          # results are numeric (vocabularies are compared as asset files).
          continue
        consts.append(tensor.SerializeToString(deterministic=True))
  return sorted(consts)


def _assets(out):
  return {
      os.path.basename(p): open(p, 'rb').read()
      for p in glob.glob(os.path.join(out, 'transform_fn', 'assets', '*'))
  }


# ----------------------------------------------------------------- real Adult


def test_adult_counts_reconcile_exactly(adult_preprocessed):
  _, manifest = adult_preprocessed
  data, test = manifest['inputs']['input'], manifest['inputs']['test_input']
  # adult.data: 32,561 rows and one trailing blank line.
  assert (data['lines'], data['rows'], data['blank_lines']) == (32562, 32561, 1)
  # adult.test: the junk first line, 16,281 rows, one trailing blank line.
  assert (test['lines'], test['rows'], test['comment_lines'],
          test['blank_lines']) == (16283, 16281, 1, 1)
  rows = manifest['rows']
  assert rows['input'] == 32561 + 16281
  assert rows['test'] == 16281
  assert rows['train'] + rows['eval'] + rows['test'] + rows[
      'quarantined'] == rows['input']
  assert rows['quarantined'] == 0
  assert rows['eval'] / (rows['train'] + rows['eval']) == pytest.approx(
      0.2, abs=0.005)


def test_adult_output_layout(adult_preprocessed):
  out, manifest = adult_preprocessed
  assert not os.path.exists(out + '.tmp')
  for name in ('train', 'eval', 'test'):
    n = manifest['rows'][name]
    assert _count_records(os.path.join(out, 'data',
                                       f'{name}-*.tfrecord.gz')) == n
    assert _count_records(os.path.join(out, 'raw',
                                       f'{name}-*.tfrecord.gz')) == n
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    with open(os.path.join(out, 'stats', f'{name}.pb'), 'rb') as f:
      stats.ParseFromString(f.read())
    assert stats.datasets[0].num_examples == n
  output = tft.TFTransformOutput(out)
  spec = output.transformed_feature_spec()
  assert spec['income_bracket'].dtype == tf.int64
  assert spec['age'].dtype == tf.float32
  assert output.vocabulary_size_by_name('workclass') > 5
  assert os.path.exists(os.path.join(out, 'quarantine'))
  with open(os.path.join(out, 'config.yaml')) as f:
    assert yaml.safe_load(f)['name'] == 'census'
  assert manifest['config']['sha256'] == load_config(CENSUS_CONFIG).config_hash
  assert manifest['versions']['tensorflow-transform'] == '1.16.0'
  assert manifest['seconds']['total'] > 0
  with open(os.path.join(out, 'manifest.json')) as f:
    assert json.load(f)['rows'] == manifest['rows']


def test_adult_label_rate_is_stratified(adult_preprocessed):
  _, manifest = adult_preprocessed
  splits = manifest['splits']
  assert abs(splits['train']['label_positive_rate'] -
             splits['eval']['label_positive_rate']) < 0.01


def test_adult_transformed_label_matches_raw(adult_preprocessed):
  out, manifest = adult_preprocessed
  positives = 0
  for path in glob.glob(os.path.join(out, 'data', 'test-*')):
    for record in tf.data.TFRecordDataset(path, compression_type='GZIP'):
      example = tf.train.Example.FromString(record.numpy())
      positives += example.features.feature['income_bracket'].int64_list.value[
          0]
  # adult.test holds 3,846 rows labelled ">50K." (alias of ">50K").
  assert positives == 3846
  assert manifest['splits']['test']['label_positive_rate'] == pytest.approx(
      3846 / 16281)


# ---------------------------------------------------------------- small data


def _toy_variant(tmp_path, name, **changes):
  with open(TOY_CONFIG) as f:
    raw = yaml.safe_load(f)
  for key, value in changes.items():
    section, field = key.split('__')
    raw[section][field] = value
  path = tmp_path / f'{name}.yaml'
  path.write_text(yaml.safe_dump(raw))
  return str(path)


def _run(config, inputs, out, *extra):
  args = [
      '--config', config, '--input', inputs, '--output-dir',
      str(out), '--num-shards', '2', *extra
  ]
  return preprocess.run(args)


@pytest.fixture(scope='module')
def toy_files(tmp_path_factory):
  d = tmp_path_factory.mktemp('toy')
  train = datagen.write_lines(
      str(d / 'train.csv'), datagen.toy_rows(600, 1), header=datagen.TOY_HEADER)
  test = datagen.write_lines(
      str(d / 'test.csv'), datagen.toy_rows(200, 2), header=datagen.TOY_HEADER)
  return train, test


def test_same_input_gives_identical_tfrecords(toy_files, tmp_path, monkeypatch):
  train, test = toy_files
  a = _run(TOY_CONFIG, train, tmp_path / 'a', '--test-input', test)
  # Beam's own default pickler, chosen explicitly, gives the same bytes, and
  # so does a transform that sees the rows in batches of 64 instead of whole
  # read chunks. (A batch size that is not a multiple of the CPU's vector
  # width moves rows between TensorFlow's vectorized and scalar math, which
  # can change a float's last bit.)
  monkeypatch.setattr(preprocess, 'TRANSFORM_BATCH_ROWS', 64)
  b = _run(TOY_CONFIG, train, tmp_path / 'b', '--test-input', test,
           '--pickle_library', 'dill')
  assert a['pipeline_options']['pickle_library'] == 'cloudpickle'
  assert b['pipeline_options']['pickle_library'] == 'dill'
  assert a['rows'] == b['rows']
  files_a = _data_bytes(str(tmp_path / 'a'))
  assert len(files_a) == 6  # train, eval, test x 2 shards
  assert files_a == _data_bytes(str(tmp_path / 'b'))
  assert _assets(str(tmp_path / 'a')) == _assets(str(tmp_path / 'b'))


def _eval_lines(config_path, lines):
  """Which lines the unstratified split sends to eval (header excluded)."""
  config = load_config(config_path)
  batch, _, _ = cleanse.RowParser(config).parse_chunk(
      RawChunk('x', 2, 'csv', [l.encode() for l in lines]))
  positions = split.row_positions(batch, config.split.seed)
  return [
      i for i, u in enumerate(positions) if u >= config.split.ratios['train']
  ]


def test_analyzers_see_train_only(toy_files, tmp_path):
  train, test = toy_files
  config = _toy_variant(tmp_path, 'unstratified', split__stratify=False)
  lines = datagen.toy_rows(600, 1)
  base = _run(config, train, tmp_path / 'base', '--test-input', test)

  # Different test rows: wild values and unseen categories.
  wild = [
      f'{900 + i}.5, {10**6 + i}, atlantis{i}, red, z, yes' for i in range(50)
  ]
  other_test = datagen.write_lines(
      str(tmp_path / 'test2.csv'), wild, header=datagen.TOY_HEADER)
  # Different eval rows, changed so that each still hashes into eval.
  changed = list(lines)
  n_changed = 0
  for i in _eval_lines(config, lines):
    for k in range(50):
      candidate = f'{999 + k}.25, 77777, gotham, blue, q, no'
      if _eval_lines(config, [candidate]) == [0]:
        changed[i] = candidate
        n_changed += 1
        break
  assert n_changed > 100
  other_train = datagen.write_lines(
      str(tmp_path / 'train2.csv'), changed, header=datagen.TOY_HEADER)
  runs = {
      'test changed':
          _run(config, train, tmp_path / 'test_changed', '--test-input',
               other_test),
      'eval changed':
          _run(config, other_train, tmp_path / 'eval_changed', '--test-input',
               test),
  }
  base_dir = str(tmp_path / 'base')
  for name, manifest in runs.items():
    out = manifest['output_dir']
    assert manifest['rows']['train'] == base['rows']['train'], name
    assert _assets(out) == _assets(base_dir), name
    assert _graph_constants(out) == _graph_constants(base_dir), name
    # The train split itself, transformed, is byte-identical too.
    assert {
        k: v for k, v in _data_bytes(out).items() if k.startswith('train')
    } == {
        k: v for k, v in _data_bytes(base_dir).items() if k.startswith('train')
    }, name


def test_parquet_and_tfrecord_inputs_match_csv(toy_files, tmp_path):
  train, _ = toy_files
  csv_run = _run(TOY_CONFIG, train, tmp_path / 'csv', '--write-raw')
  # The same rows as Parquet, with native types and nulls for missing values.
  config = load_config(TOY_CONFIG)
  batch, _, _ = cleanse.RowParser(config).parse_chunk(
      RawChunk('x', 1, 'csv',
               open(train, 'rb').read().splitlines()))
  table = pa.table({
      name: [v[0] if v else None for v in batch.column(name).to_pylist()]
      for name in batch.schema.names
  })
  table = table.set_column(
      table.schema.get_field_index('city'), 'city',
      pa.array([
          v.decode() if v else None for v in table.column('city').to_pylist()
      ]))
  pq.write_table(table, str(tmp_path / 'train.parquet'))
  parquet_run = _run(
      _toy_variant(tmp_path, 'parquet', input__format='parquet'),
      str(tmp_path / 'train.parquet'), tmp_path / 'parquet')
  # And the raw tf.Examples that the CSV run wrote.
  tfrecord_run = _run(
      _toy_variant(tmp_path, 'tfrecord', input__format='tfrecord'),
      str(tmp_path / 'csv' / 'raw' / '*.tfrecord.gz'), tmp_path / 'tfrecord')
  for manifest in (parquet_run, tfrecord_run):
    assert manifest['rows']['quarantined'] == 0
    assert manifest['rows']['train'] + manifest['rows']['eval'] == (
        csv_run['rows']['train'] + csv_run['rows']['eval'])
  # Same rows in the same order: the very same bytes.
  assert _data_bytes(str(tmp_path / 'parquet')) == _data_bytes(
      str(tmp_path / 'csv'))
  # The raw/ shards hold the rows in another order and other batches, so the
  # analyzers' float32 sums round differently: equal ids, floats within 1e-5.
  for name in ('train', 'eval'):
    expected = _decoded(str(tmp_path / 'csv'), name)
    got = _decoded(str(tmp_path / 'tfrecord'), name)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
      assert a.keys() == b.keys()
      for key in a:
        if isinstance(a[key], float):
          assert a[key] == pytest.approx(b[key], abs=1e-5), key
        else:
          assert a[key] == b[key], key


def test_bad_rows_are_quarantined_and_counted(capsys, tmp_path):
  good = datagen.toy_rows(300, 3)
  bad = [
      '1, 2, 3',  # wrong arity
      'tall, 3, paris, red, x, yes',  # not a number
      '170, 3, paris, purple, x, yes',  # value not allowed
      '170, 3, paris, red, x, maybe',  # unknown label
      '170, 3, paris, red, x, ?',  # missing label
  ]
  path = tmp_path / 'in.csv'
  with open(path, 'wb') as f:
    f.write((datagen.TOY_HEADER + '\n').encode())
    for line in good[:100] + bad + good[100:]:
      f.write(line.encode() + b'\n')
    f.write(b'170, 3, p\xe4ris, red, x, yes\n')  # not UTF-8
    f.write(b'9' * (1 << 20) + b'\n')  # a 1 MB line
    f.write(b'\n# a comment\n')
  # With a short period, this run also shows the progress lines a user sees
  # (pipeline/progress.py; tests/pipeline/test_progress.py tests the rest).
  manifest = _run(TOY_CONFIG, str(path), tmp_path / 'out', '--progress-seconds',
                  '0.5')
  shown = [
      line for line in capsys.readouterr().out.splitlines()
      if line.startswith('preprocess: ')
  ]
  assert any('building the job graph' in line for line in shown), shown
  running = [
      line for line in shown
      if 'running the job (DirectRunner, in_memory): ' in line
  ]
  assert running and ' started, now ' in running[-1], shown
  summary = manifest['inputs']['input']
  assert summary['lines'] == 1 + 300 + 5 + 2 + 2
  assert summary['header_lines'] == 1
  assert summary['blank_lines'] == 1 and summary['comment_lines'] == 1
  assert manifest['rows']['quarantined'] == 7
  assert manifest['rows']['train'] + manifest['rows']['eval'] == 300
  assert manifest['quarantined_by_reason'] == {
      'invalid_encoding': 1,
      'line_too_long': 1,
      'missing_label': 1,
      'not_a_number': 1,
      'unknown_label': 1,
      'value_not_allowed': 1,
      'wrong_arity': 1
  }
  records = []
  for p in glob.glob(str(tmp_path / 'out' / 'quarantine' / '*.jsonl')):
    with open(p, encoding='utf-8') as f:
      records.extend(json.loads(line) for line in f)
  assert len(records) == 7
  by_reason = {r['reason']: r for r in records}
  assert by_reason['wrong_arity']['line'] == 102
  assert by_reason['wrong_arity']['raw'] == '1, 2, 3'
  assert by_reason['wrong_arity']['source'].endswith('in.csv')
  assert by_reason['invalid_encoding']['line'] == 307


# ----------------------------------------------------------------- bad input


def _main(capsys, *args):
  code = preprocess.main(list(args))
  err = capsys.readouterr().err.strip().splitlines()
  return code, err


def test_missing_input_is_one_clear_line(capsys, tmp_path):
  code, err = _main(capsys, '--config', TOY_CONFIG, '--input',
                    str(tmp_path / 'nope-*.csv'), '--output-dir',
                    str(tmp_path / 'out'))
  assert code == 2
  assert err == [
      f'preprocess: error: --input {tmp_path}/nope-*.csv: no file '
      'matches this pattern'
  ]
  assert not os.path.exists(tmp_path / 'out')


def test_empty_input(capsys, tmp_path):
  (tmp_path / 'empty.csv').write_bytes(b'')
  code, err = _main(capsys, '--config', TOY_CONFIG, '--input',
                    str(tmp_path / 'empty.csv'), '--output-dir',
                    str(tmp_path / 'out'))
  assert code == 2 and len(err) == 1 and 'input is empty' in err[0]


def test_unreadable_input(capsys, tmp_path):
  (tmp_path / 'broken.csv.gz').write_bytes(b'this is not gzip data')
  code, err = _main(capsys, '--config', TOY_CONFIG, '--input',
                    str(tmp_path / 'broken.csv.gz'), '--output-dir',
                    str(tmp_path / 'out'))
  assert code == 2 and len(err) == 1
  assert 'cannot read' in err[0] and 'broken.csv.gz' in err[0]


def test_config_error_names_the_key(capsys, tmp_path):
  bad = tmp_path / 'bad.yaml'
  bad.write_text(open(TOY_CONFIG).read().replace('buckets: 4', 'bucket: 4'))
  code, err = _main(capsys, '--config', str(bad), '--input', TOY_CONFIG,
                    '--output-dir', str(tmp_path / 'out'))
  assert code == 2 and len(err) == 1
  assert 'features.height' in err[0] and "'bucket'" in err[0]


def test_an_output_dir_that_cannot_be_made_is_one_clear_line(capsys, tmp_path):
  (tmp_path / 'file').write_text('a file, not a directory')
  out = tmp_path / 'file' / 'out'
  code, err = _main(capsys, '--config', TOY_CONFIG, '--input', TOY_CONFIG,
                    '--output-dir', str(out))
  assert code == 2
  assert err == [
      f'preprocess: error: --output-dir {out}: cannot create {out}.lock '
      '(File exists)'
  ]


def test_existing_output_needs_overwrite(capsys, tmp_path):
  (tmp_path / 'out').mkdir()
  code, err = _main(capsys, '--config', TOY_CONFIG, '--input', TOY_CONFIG,
                    '--output-dir', str(tmp_path / 'out'))
  assert code == 2 and '--overwrite' in err[0]


@pytest.mark.parametrize('beam_args, mode', [
    ([], 'in_memory'),
    (['--direct_num_workers', '2'], 'multi_processing'),
    (['--direct_num_workers=0'], 'multi_processing'),
    (['--direct_num_workers', '2', '--direct_running_mode', 'in_memory'
     ], 'in_memory'),
    (['--direct_num_workers', '2', '--direct_running_mode=multi_processing'
     ], 'multi_processing'),
])
def test_several_direct_workers_are_processes_unless_a_mode_is_given(
    beam_args, mode):
  options = preprocess._pipeline_options(beam_args)  # pylint: disable=protected-access
  assert options.view_as(DirectOptions).direct_running_mode == mode


def test_threaded_direct_workers_are_refused_up_front(capsys, tmp_path):
  code, err = _main(capsys, '--config',
                    TOY_CONFIG, '--input', TOY_CONFIG, '--output-dir',
                    str(tmp_path / 'out'), '--direct_running_mode',
                    'multi_threading', '--direct_num_workers', '2')
  assert code == 2 and len(err) == 1
  assert 'multi_threading' in err[0] and 'multi_processing' in err[0]
  assert not os.path.exists(tmp_path / 'out')


def test_no_usable_rows_leaves_no_output(capsys, tmp_path):
  path = datagen.write_lines(
      str(tmp_path / 'junk.csv'), ['a, b', 'c, d, e'],
      header=datagen.TOY_HEADER)
  code, err = _main(capsys, '--config', TOY_CONFIG, '--input', path,
                    '--output-dir', str(tmp_path / 'out'))
  assert code == 2 and len(err) == 1, err
  assert 'no usable rows' in err[0] and 'nothing published' in err[0]
  assert not os.path.exists(tmp_path / 'out')
  assert not os.path.exists(str(tmp_path / 'out') + '.tmp')
  # The message points at the quarantine where it really is.
  kept = str(tmp_path / 'out') + '.rejected'
  assert err[0].endswith(f'see the quarantine in {kept}/quarantine')
  reasons = [
      json.loads(line)['reason']
      for path in glob.glob(os.path.join(kept, 'quarantine', '*'))
      for line in open(path)
  ]
  assert sorted(reasons) == [cleanse.WRONG_ARITY, cleanse.WRONG_ARITY]


def test_cli_exit_code_and_message(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONWARNINGS='ignore')
  result = subprocess.run([
      sys.executable, '-m', 'pipeline.preprocess', '--config', TOY_CONFIG,
      '--input',
      str(tmp_path / 'missing.csv'), '--output-dir',
      str(tmp_path / 'out')
  ],
                          cwd=ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f'preprocess: error: --input {tmp_path}/missing.csv: no file matches '
      'this pattern')


def _start_cli(args, tmp_path, **extra_env):
  env = dict(
      os.environ,
      TF_CPP_MIN_LOG_LEVEL='3',
      PYTHONWARNINGS='ignore',
      **extra_env)
  return subprocess.Popen([sys.executable, '-m', 'pipeline.preprocess', *args],
                          cwd=ROOT,
                          env=env,
                          stdout=subprocess.DEVNULL,
                          stderr=open(tmp_path / 'stderr.txt', 'w'),
                          text=True)


@pytest.mark.usefixtures('sigint_from_a_terminal')
@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_job_and_publishes_nothing(tmp_path, signum):
  """Ctrl-C (or a scheduler's SIGTERM) in the middle of the Beam job."""
  path = datagen.write_lines(
      str(tmp_path / 'in.csv'),
      datagen.toy_rows(60000, seed=5),
      header=datagen.TOY_HEADER)
  out = tmp_path / 'out'
  temp = tmp_path / 'tmpdir'
  temp.mkdir()
  proc = _start_cli(
      ['--config', TOY_CONFIG, '--input', path, '--output-dir',
       str(out)],
      tmp_path,
      TMPDIR=str(temp))
  # Beam's temporary files appear once the job itself is running.
  code = signal_when(proc, lambda: bool(glob.glob(str(out) + '.tmp/tmp/*')),
                     signum,
                     lambda: open(tmp_path / 'stderr.txt').read()[-3000:])
  err = open(tmp_path / 'stderr.txt').read().strip().splitlines()
  name = signal.Signals(signum).name
  assert code == 128 + signum, err[-20:]
  assert err[-1] == (f'preprocess: stopped by {name}; nothing published to '
                     f'{out}')
  # The one line, not the stop's traceback from where it landed in the job.
  assert not [line for line in err if 'Traceback' in line], '\n'.join(err)
  # Neither the output, its staging directory nor one renamed to discard.
  assert glob.glob(str(out) + '*') == []
  # Nor the job's temporary directory (pipeline/scratch.py).
  assert os.listdir(temp) == []


def test_a_second_job_on_the_same_output_dir_stops_and_the_first_finishes(
    capsys, tmp_path):
  """Two runs of one command (a second terminal, an overlapping schedule):
  the second stops with one line naming the first, even with --overwrite,
  and the first publishes its output."""
  path = datagen.write_lines(
      str(tmp_path / 'in.csv'),
      datagen.toy_rows(3000, seed=5),
      header=datagen.TOY_HEADER)
  out = tmp_path / 'out'
  args = ['--config', TOY_CONFIG, '--input', path, '--output-dir', str(out)]
  first = _start_cli(args, tmp_path)
  try:
    deadline = time.monotonic() + 240
    while not os.path.isdir(f'{out}.tmp'):
      assert first.poll() is None, open(tmp_path / 'stderr.txt').read()
      assert time.monotonic() < deadline, 'the first job never started'
      time.sleep(0.01)
    code, err = _main(capsys, *args, '--overwrite')
    assert first.wait(timeout=240) == 0, open(tmp_path / 'stderr.txt').read()
  finally:
    if first.poll() is None:
      first.kill()
      first.wait()
  assert code == 2 and len(err) == 1, err
  assert err[0].startswith(f'preprocess: error: --output-dir {out}: another '
                           f'run is writing it (pid {first.pid} on ')
  assert json.load(open(out / 'manifest.json'))['rows']['input'] == 3000
  assert sorted(os.listdir(tmp_path)) == ['in.csv', 'out', 'stderr.txt']


def test_quoted_line_break_is_one_row_in_the_job(tmp_path):
  """A field with a line break inside quotes is one row, numbered by its
  first line; a stray quote quarantines one line, not the rest of the file."""
  rows = datagen.toy_rows(300, seed=9)
  rows[10] = '171.0, 3, oslo, red, "first line\nsecond line", yes'
  rows[20] = '165.0, 1, lima, blue, "unterminated, no'
  path = datagen.write_lines(
      str(tmp_path / 'in.csv'), rows, header=datagen.TOY_HEADER)
  doc = _run(TOY_CONFIG, path, tmp_path / 'out')
  assert doc['rows']['input'] == 301 - 1  # header counted apart
  assert doc['rows']['quarantined'] == 1
  assert doc['rows']['train'] + doc['rows']['eval'] == 299
  [q] = [
      json.loads(line)
      for p in glob.glob(str(tmp_path / 'out' / 'quarantine' / '*'))
      for line in open(p)
  ]
  assert q['line'] == 1 + 20 + 2  # header, 20 rows, the two-line record
  assert q['raw'].startswith('165.0, 1, lima, blue, "unterminated')
