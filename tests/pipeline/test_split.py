"""Split: deterministic, complete, and stratified by label when asked."""

import ast
import dataclasses
import glob
import os
import tempfile

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
import numpy as np
import pyarrow as pa
import pytest

from core.config import load_config
from pipeline import cleanse
from pipeline import split
from pipeline.sources import RawChunk
from tests import datagen
from tests.conftest import TOY_CONFIG


@pytest.fixture(scope='module')
def toy():
  return load_config(TOY_CONFIG)


def _row_key(row):
  return repr(sorted(row.items()))


def _batches(config, lines, chunk=500):
  parser = cleanse.RowParser(config)
  out = []
  for start in range(0, len(lines), chunk):
    batch, quarantine, _ = parser.parse_chunk(
        RawChunk('x.csv', start + 2, 'csv',
                 [l.encode() for l in lines[start:start + chunk]]))
    assert quarantine == []
    out.append(batch)
  return out


def _run_split(config, batches, names=('train', 'eval')):
  """Runs SplitDataset and returns {split: [rows as dicts]}.

  Rows come back through files, as they would from any Beam job: DoFns run
  on pickled copies, so in-memory side effects never reach the test.
  """
  with tempfile.TemporaryDirectory() as out:
    with test_pipeline.TestPipeline() as p:
      splits = (
          p | beam.Create(batches)
          | split.SplitDataset(config, list(names)))
      for name, pcoll in splits.items():
        _ = (
            pcoll
            | f'Rows[{name}]' >> beam.FlatMap(lambda b: b.to_pylist())
            | f'Repr[{name}]' >> beam.Map(repr)
            | f'Write[{name}]' >> beam.io.WriteToText(os.path.join(out, name)))
    collected = {}
    for name in names:
      rows = []
      for path in glob.glob(os.path.join(out, name + '-*')):
        with open(path) as f:
          rows.extend(ast.literal_eval(line) for line in f)
      collected[name] = rows
  return collected


def _positive_rate(rows, label='outcome'):
  return sum(r[label] == [b'yes'] for r in rows) / len(rows)


def test_cut_points_without_histogram_are_cumulative_ratios():
  assert split.cut_points([0.8, 0.2]) == pytest.approx([0.8])
  assert split.cut_points([0.7, 0.2, 0.1]) == pytest.approx([0.7, 0.9])


def test_cut_points_follow_histogram_mass():
  hist = np.zeros(split.HISTOGRAM_BINS)
  hist[:10] = 1  # all rows in the first 10 bins
  cuts = split.cut_points([0.5, 0.5], hist)
  assert cuts == [5 / split.HISTOGRAM_BINS]


def test_positions_are_deterministic_and_seeded(toy):
  batch = _batches(toy, datagen.toy_rows(50))[0]
  a = split.row_positions(batch, seed=7)
  assert np.array_equal(a, split.row_positions(batch, seed=7))
  assert not np.array_equal(a, split.row_positions(batch, seed=8))
  assert ((a >= 0) & (a < 1)).all()


def test_stratified_split_keeps_label_rate(toy):
  # A 10 % minority class on a few thousand rows: plain hashing would let the
  # eval rate wander by a point or more; stratified cuts keep it in step.
  lines = datagen.toy_rows(4000, seed=3, positive_rate=0.1)
  collected = _run_split(toy, _batches(toy, lines))
  train, ev = collected['train'], collected['eval']
  assert len(train) + len(ev) == 4000
  assert len(ev) / 4000 == pytest.approx(0.25, abs=0.01)
  overall = _positive_rate(train + ev)
  for rows in (train, ev):
    assert abs(_positive_rate(rows) - overall) < 0.005


def test_stratified_split_assigns_rows_by_their_hash_bins(toy):
  """Each row goes where its hash position's bin and its label's cut points
  send it, computed here from the rows alone, and comes out with the columns
  it came in with: the bins the split carries between its stages stay
  inside it."""
  batches = _batches(toy, datagen.toy_rows(3000, seed=12, positive_rate=0.3))
  rows, bins = [], []
  for batch in batches:
    rows.extend(batch.to_pylist())
    bins.extend(
        np.minimum((split.row_positions(batch, toy.split.seed) *
                    split.HISTOGRAM_BINS).astype(np.int64),
                   split.HISTOGRAM_BINS - 1))
  labels = [row['outcome'][0] for row in rows]
  cuts = {
      label:
          split.cut_points(
              [toy.split.ratios['train'], toy.split.ratios['eval']],
              np.bincount([b for b, l in zip(bins, labels) if l == label],
                          minlength=split.HISTOGRAM_BINS))
      for label in set(labels)
  }
  expected = {'train': [], 'eval': []}
  for row, b, label in zip(rows, bins, labels):
    goes_to = np.searchsorted(
        cuts[label], b / split.HISTOGRAM_BINS, side='right')
    expected[('train', 'eval')[goes_to]].append(_row_key(row))
  collected = _run_split(toy, batches)
  for name in ('train', 'eval'):
    assert sorted(map(_row_key, collected[name])) == sorted(expected[name])
    assert {tuple(sorted(row)) for row in collected[name]
           } == {tuple(sorted(batches[0].schema.names))}


def test_split_is_deterministic_and_independent_of_batching(toy):
  lines = datagen.toy_rows(1200, seed=4)
  a = _run_split(toy, _batches(toy, lines, chunk=1200))
  b = _run_split(toy, _batches(toy, lines, chunk=77))
  for name in ('train', 'eval'):
    assert sorted(map(_row_key, a[name])) == sorted(map(_row_key, b[name]))


def test_unstratified_split_depends_on_the_row_alone(toy):
  config = dataclasses.replace(
      toy, split=dataclasses.replace(toy.split, stratify=False))
  lines = datagen.toy_rows(1000, seed=5)
  full = _run_split(config, _batches(config, lines))
  half = _run_split(config, _batches(config, lines[:500]))
  full_eval = set(map(_row_key, full['eval']))
  assert set(map(_row_key, half['eval'])) <= full_eval
  assert not set(map(_row_key, half['train'])) & full_eval


def test_duplicate_rows_land_in_the_same_split(toy):
  lines = datagen.toy_rows(300, seed=6)
  collected = _run_split(toy, _batches(toy, lines + lines[:100]))
  train = set(map(_row_key, collected['train']))
  ev = set(map(_row_key, collected['eval']))
  assert not train & ev


def test_three_way_split_from_ratios(toy):
  config = dataclasses.replace(
      toy,
      split=dataclasses.replace(
          toy.split, ratios={
              'train': 0.6,
              'eval': 0.2,
              'test': 0.2
          }))
  assert split.split_names(
      config, has_test_input=False) == ['train', 'eval', 'test']
  assert split.split_names(config, has_test_input=True) == ['train', 'eval']
  collected = _run_split(
      config,
      _batches(config, datagen.toy_rows(2000)),
      names=('train', 'eval', 'test'))
  sizes = {k: len(v) for k, v in collected.items()}
  assert sum(sizes.values()) == 2000
  assert sizes['test'] / 2000 == pytest.approx(0.2, abs=0.01)


def test_summarize_split_counts_rows_and_positives(toy):
  batches = _batches(toy, datagen.toy_rows(600, seed=9))
  expected_pos = sum(
      sum(v == [b'yes']
          for v in b.column('outcome').to_pylist())
      for b in batches)
  with test_pipeline.TestPipeline() as p:
    summary = (
        p | beam.Create(batches)
        | split.SummarizeSplit(toy)
        | beam.CombineGlobally(cleanse.SumCounts()))
    assert_that(summary, equal_to([{'rows': 600, 'positive': expected_pos}]))


def test_every_value_moves_the_position_and_layout_does_not(toy):
  batch = _batches(toy, datagen.toy_rows(300, seed=8), chunk=300)[0]
  base = split.row_positions(batch, seed=7)
  # The same rows in other buffers (a slice of a larger batch) hash the same.
  sliced = pa.concat_tables([pa.Table.from_batches([batch])] *
                            2).combine_chunks().to_batches()[0].slice(300)
  assert np.array_equal(split.row_positions(sliced, seed=7), base)
  # Changing one value of one column moves that row, and only that row.
  for name in batch.schema.names:
    column = batch.column(name).to_pylist()
    value = column[0]
    for other in ([b'zz'], [12345], [0.5], None, []):
      if other == value:
        continue
      try:
        changed = pa.array([other] + column[1:], batch.schema.field(name).type)
      except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        continue
      moved = split.row_positions(
          pa.RecordBatch.from_arrays([
              changed if n == name else batch.column(n)
              for n in batch.schema.names
          ],
                                     schema=batch.schema),
          seed=7)
      assert moved[0] != base[0], (name, value, other)
      assert np.array_equal(moved[1:], base[1:])


def test_positions_spread_evenly(toy):
  positions = np.concatenate([
      split.row_positions(b, seed=7)
      for b in _batches(toy, datagen.toy_rows(20000, seed=9))
  ])
  counts = np.histogram(positions, bins=20, range=(0, 1))[0]
  # 1000 expected per bin; a good hash stays well within +-15 %.
  assert counts.min() > 850 and counts.max() < 1150, counts
