"""pipeline.feature_warnings: the column checks on a curated config's
features, from the train statistics and a sample of the input."""

import functools
import gzip
import json
import sys

import pyarrow as pa
import pytest
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl
import yaml

from core import forked
from core.config import parse_config
from pipeline import cleanse
from pipeline import config_draft
from pipeline import feature_warnings
from pipeline import manifest
from pipeline import sources
from pipeline import stats_report
from tests import datagen

ROWS = 2000


@pytest.fixture(scope='module')
def trips(tmp_path_factory):
  d = tmp_path_factory.mktemp('trips')
  path = datagen.write_lines(
      str(d / 'trips.csv'),
      datagen.trip_rows(ROWS, seed=8),
      header=datagen.TRIP_HEADER)
  draft = config_draft.draft_config(path, 'tipped', name='trips')
  return path, draft


def _train_statistics(config, path):
  """TFDV statistics of all the file's rows, as the job computes them for
  a split: the same parser, the same statistics generator."""
  with open(path, 'rb') as f:
    lines = f.read().split(b'\n')
  batch, _, _ = cleanse.RowParser(config).parse_chunk(
      sources.RawChunk(path, 1, 'csv', lines))
  stats = stats_impl.generate_statistics_in_memory(batch, tfdv.StatsOptions())
  return stats.datasets[0]


def test_each_kind_of_problem_is_found_once(trips):
  path, draft = trips
  config = parse_config(datagen.trip_config_with_every_column(draft.text))
  sample = feature_warnings.sample_input(config, [path])
  assert sample.rows == ROWS
  findings = feature_warnings.check_features(config,
                                             _train_statistics(config, path),
                                             sample)
  by_column = {f.column: f for f in findings}
  assert {
      c: f.check for c, f in by_column.items()
  } == {
      'trip_id': 'identifier',
      'pickup_area': 'integer_code',
      'notes': 'empty',
      'vendor': 'constant',
      'tip': 'leakage'
  }
  assert [f.column for f in findings
         ] == ['trip_id', 'pickup_area', 'notes', 'vendor', 'tip']
  assert by_column['notes'].detail == (
      f'notes has no value in the {ROWS:,} rows of the train split: nothing '
      'to learn from; consider removing it from features:')
  assert by_column['vendor'].detail.startswith(
      "vendor has the one value 'acme' in every row")
  assert by_column['pickup_area'].detail.endswith(
      'it is scaled as a quantity: consider type: string (one id per value)')
  assert by_column['tip'].detail.startswith(
      '`tip` alone predicts the label with AUC 0.99')
  assert by_column['tip'].detail.endswith(
      'likely leakage; keep it under `features:` only if it is really known '
      'at serving time')
  assert by_column['tip'].score >= 0.98


def test_a_forked_child_finds_in_the_sample_what_is_found_here(trips):
  path, draft = trips
  config = parse_config(datagen.trip_config_with_every_column(draft.text))
  here = feature_warnings.sampled_findings(config, [path])
  assert {
      c: f.check for c, f in here.items()
  } == {
      'trip_id': 'identifier',
      'pickup_area': 'integer_code',
      'tip': 'leakage'
  }
  with forked.Ahead(
      functools.partial(feature_warnings.sampled_findings, config,
                        [path])) as ahead:
    assert ahead.forked == sys.platform.startswith('linux')
    assert ahead.result() == here


def test_the_drafted_config_has_nothing_to_warn_about(trips):
  path, draft = trips
  config = draft.config
  sample = feature_warnings.sample_input(config, [path])
  assert feature_warnings.check_features(config,
                                         _train_statistics(config,
                                                           path), sample) == []


def test_without_a_sample_the_statistics_still_tell(trips):
  path, draft = trips
  config = parse_config(datagen.trip_config_with_every_column(draft.text))
  findings = feature_warnings.check_features(config,
                                             _train_statistics(config, path),
                                             None)
  assert {
      f.column: f.check for f in findings
  } == {
      'notes': 'empty',
      'vendor': 'constant'
  }


def test_a_number_imputed_to_its_one_value_is_constant(tmp_path):
  text = '\n'.join(['level,depth,y'] + [
      f'{"" if i % 3 else 7},{"" if i % 3 else 5},{"a" if i % 2 else "b"}'
      for i in range(300)
  ])
  path = str(tmp_path / 'levels.csv')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text + '\n')
  config = parse_config(
      yaml.safe_dump({
          'name': 'levels',
          'input': {
              'format': 'csv',
              'csv': {
                  'header': True
              }
          },
          'columns': [{
              'name': 'level',
              'type': 'int'
          }, {
              'name': 'depth',
              'type': 'int'
          }, {
              'name': 'y',
              'type': 'string'
          }],
          'label': {
              'column': 'y',
              'classes': ['a', 'b'],
              'positive': 'b'
          },
          # Missing levels become the mean, 7; missing depths become 0.
          'features': {
              'level': {},
              'depth': {
                  'impute': 'zero'
              }
          },
          'split': {
              'ratios': {
                  'train': 0.8,
                  'eval': 0.2
              }
          }
      }))
  findings = feature_warnings.check_features(config,
                                             _train_statistics(config, path),
                                             None)
  assert [(f.column, f.check) for f in findings] == [('level', 'constant')]
  assert 'its 200 missing values are imputed to it' in findings[0].detail


@pytest.mark.parametrize('window_bytes', [None, 4096])
def test_the_sample_is_spread_over_a_sorted_file(tmp_path, monkeypatch,
                                                 window_bytes):
  rows = sorted(
      datagen.trip_rows(3000, seed=2), key=lambda r: r.endswith(',yes'))
  path = datagen.write_lines(
      str(tmp_path / 'sorted.csv'), rows, header=datagen.TRIP_HEADER)
  config = parse_config(
      datagen.trip_config_with_every_column(
          config_draft.draft_config(path, 'tipped', name='t').text))
  if window_bytes:  # small enough that the file has room for every window
    monkeypatch.setattr(feature_warnings, 'WINDOW_BYTES', window_bytes)
  sample = feature_warnings.sample_input(config, [path], max_rows=400)
  assert 390 <= sample.rows <= 400
  assert set(sample.labels) == {0.0, 1.0}  # the first rows hold only 'no'
  ids = sample.values['trip_id']
  assert max(ids) - min(ids) > 2500  # from all over the file


def test_the_sample_reads_compressed_files_and_skips_a_bom(trips, tmp_path):
  path, draft = trips
  with open(path, 'rb') as f:
    data = f.read()
  gz = str(tmp_path / 'trips.csv.gz')
  with gzip.open(gz, 'wb') as f:
    f.write(data)
  sample = feature_warnings.sample_input(draft.config, [gz], max_rows=500)
  assert sample.rows == 499  # 500 lines read from the start, one the header
  first = data.decode().splitlines()[1:4]
  assert sample.values['payment'][:3] == [
      l.split(',')[4].encode() or None for l in first
  ]
  # Without a header, a byte-order mark would spoil the first row's id.
  bom = str(tmp_path / 'bom.csv')
  with open(bom, 'wb') as f:
    f.write(b'\xef\xbb\xbf' + data.split(b'\n', 1)[1])
  doc = yaml.safe_load(draft.text)
  doc['input']['csv']['header'] = False
  doc['features']['trip_id'] = {}
  config = parse_config(yaml.safe_dump(doc))
  sample = feature_warnings.sample_input(config, [bom], max_rows=500)
  assert sample.rows == 500
  assert sample.values['trip_id'][0] == 50_000


def test_the_manifest_and_the_report_carry_the_warnings(trips):
  path, draft = trips
  config = parse_config(datagen.trip_config_with_every_column(draft.text))
  stats = _train_statistics(config, path)
  findings = feature_warnings.check_features(
      config, stats, feature_warnings.sample_input(config, [path]))
  doc = manifest.build_manifest(
      config=config,
      config_path='trips.yaml',
      inputs={'input': {
          'pattern': path,
          'files': [path]
      }},
      counts={
          'input': {
              'lines': ROWS + 2,
              'header_lines': 1,
              'blank_lines': 1,
              'rows_kept': ROWS
          },
          'train': {
              'rows': ROWS - 400
          },
          'eval': {
              'rows': 400
          }
      },
      split_names=['train', 'eval'],
      seconds={'total': 1.0},
      num_shards=1,
      pipeline_options={},
      output_dir='out',
      feature_warnings=findings)
  warned = json.loads(json.dumps(doc))['feature_warnings']
  assert [(w['column'], w['check']) for w in warned
         ] == [('trip_id', 'identifier'), ('pickup_area', 'integer_code'),
               ('notes', 'empty'), ('vendor', 'constant'), ('tip', 'leakage')]
  assert warned[-1]['score'] >= 0.98
  summary = manifest.format_summary(doc)
  assert '  feature warning notes: empty' in summary.splitlines()
  page = stats_report.render(
      'trips', [('train', stats)], feature_warnings=findings)
  assert 'Feature checks <small class="bad">5</small>' in page
  assert '<section class="feature warned" id="f-tip"' in page
  assert '<section class="feature" id="f-distance"' in page
  assert 'likely leakage; keep it under `features:`' in page
  clean = stats_report.render('trips', [('train', stats)], feature_warnings=[])
  assert 'Feature checks <small class="ok">0</small>' in clean
  assert 'Feature checks' not in stats_report.render('trips',
                                                     [('train', stats)])


def test_sampled_values_are_each_rows_first_value_or_none():
  # Sliced chunks (the parser's batches are slices), an empty one, empty and
  # null lists.
  ints = pa.array([[1], [], None, [2, 3], [4]], pa.large_list(pa.int64()))
  strings = pa.array([['x'], None, [], ['y', 'z']], pa.large_list(pa.string()))
  assert feature_warnings._first_values(
      pa.chunked_array([ints.slice(1, 4),
                        ints.slice(0, 0),
                        ints.slice(0, 1)])) == [None, None, 2, 4, 1]
  assert feature_warnings._first_values(pa.chunked_array(
      [strings])) == ['x', None, None, 'y']
