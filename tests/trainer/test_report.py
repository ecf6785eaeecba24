"""MDIR/report.html: its plots, its numbers and its slices, in a real browser.

The browser test renders the page in headless Chromium (tests/browser.py:
`--dump-dom` prints the DOM after the page's load handler ran; without
Chromium it skips, under CI=true it fails). The page's own script records
every image's naturalWidth in the DOM, so a broken or missing PNG shows as
width 0; every number on the page carries a data-key naming where in
metrics.json it comes from.
"""

import html
import json
import os
import re

import numpy as np
from PIL import Image
import pytest

from core.config import load_config
from core.layout import ModelDir
from core.layout import resolve_export
from tests.browser import dump_dom
from tests.conftest import TOY_CONFIG
from trainer import heads
from trainer import report
from trainer import slices
from trainer import task

SLICES = ('height', 'city', 'color')
# The figures of a binary model's page.
BINARY_FIGURES = [
    report.FIGURES[k]
    for k in ('learning', 'roc', 'pr', 'confusion', 'calibration')
]


@pytest.fixture(scope='module')
def sliced_model(trainer_toy_preprocessed, tmp_path_factory):
  """A short toy run with slices and balanced class weights."""
  preprocess_dir, _ = trainer_toy_preprocessed
  model_dir = str(tmp_path_factory.mktemp('trainer_report') / 'model')
  said = []

  def say(line):
    # What a reader of the line finds on disk at that moment.
    said.append((line, _outputs_present(model_dir)))

  doc = task.run([
      '--preprocess-dir', preprocess_dir, '--model-dir', model_dir, '--epochs',
      '4', '--batch-size', '64', '--verbose', '0', '--seed', '5', '--slices',
      ','.join(SLICES), '--slice-buckets', '3', '--class-weight', 'balanced'
  ],
                 say=say)
  with open(ModelDir(model_dir).metrics_path) as f:
    saved = json.load(f)
  return model_dir, doc, saved, said


def _outputs_present(model_dir):
  exports = os.path.join(model_dir, 'export')
  present = set()
  if os.path.isdir(exports) and any(
      os.path.exists(os.path.join(exports, v, 'saved_model.pb'))
      for v in os.listdir(exports)):
    present.add('export')
  if os.path.exists(ModelDir(model_dir).metrics_path):
    present.add('metrics.json')
  if os.path.exists(ModelDir(model_dir).report_path):
    present.add('report.html')
  return present


def _lookup(doc, key):
  """metrics.json value at a dotted data-key (keys may contain dots)."""
  parts = key.split('.')
  node = doc
  while parts:
    for n in range(len(parts), 0, -1):
      head = '.'.join(parts[:n])
      if isinstance(node, list) and head.isdigit():
        node, parts = node[int(head)], parts[n:]
        break
      if isinstance(node, dict) and head in node:
        node, parts = node[head], parts[n:]
        break
    else:
      raise KeyError(key)
  return node


def _shown(value):
  """How the page writes a metrics.json value."""
  if value is None:
    return 'n/a'
  if isinstance(value, bool) or isinstance(value, str):
    return str(value)
  if isinstance(value, int):
    return f'{value:,d}'
  return f'{value:.4f}'


def test_each_step_is_reported_as_it_ends(sliced_model):
  """The command says what each step gave while the later ones still run:
  the results before the export exists, the export's line once it is on
  disk (before metrics.json), the report's once the page is written."""
  model_dir, doc, _, said = sliced_model
  lines = [line for line, _ in said]
  kinds = [
      'epochs in', 'scored eval', 'trainer: threshold', 'exported',
      'scored through the export', 'report'
  ]
  assert len(lines) == len(kinds), lines
  for line, kind in zip(lines, kinds):
    assert kind in line, (kind, lines)
  present = [outputs for _, outputs in said]
  assert present[:3] == [set()] * 3
  assert present[3] == present[4] == {'export'}
  assert present[5] == {'export', 'metrics.json', 'report.html'}
  assert f'{doc["training"]["epochs_run"]} epochs' in lines[0]
  assert doc['export_dir'] in lines[3]
  assert doc['report'] in lines[5]
  assert '(slices)' in lines[4]
  rows = {s: doc[s]['rows'] for s in ('eval', 'test')}
  assert (f'eval ({rows["eval"]:,} rows) and test ({rows["test"]:,} rows)'
          in lines[1])
  assert re.search(r' in \d+\.\d s$', lines[3]), lines[3]


def test_report_files_are_decodable_pngs(sliced_model):
  model_dir, doc, saved, _ = sliced_model
  assert doc['report'] == ModelDir(model_dir).report_path
  assert os.path.isfile(doc['report'])
  for name in BINARY_FIGURES:
    with Image.open(os.path.join(model_dir, name)) as im:
      assert im.format == 'PNG'
      assert im.size[0] >= 300 and im.size[1] >= 200
      im.load()  # decodes every pixel
      # A plot, not a blank canvas.
      assert len(im.convert('L').getcolors(maxcolors=1 << 16) or [1, 2]) > 10
  page = open(doc['report'], encoding='utf-8').read()
  for name in BINARY_FIGURES:
    assert f'src="{name}"' in page
  # Self-contained: nothing fetched from the network.
  assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page)
  assert saved['report'] == doc['report']


def test_report_renders_in_chromium_with_metrics_json_numbers(
    sliced_model, tmp_path):
  model_dir, _, saved, _ = sliced_model
  dom = dump_dom(ModelDir(model_dir).report_path, tmp_path)
  # Every image decoded in the browser, at its real size.
  images = re.findall(r'<img [^>]*>', dom)
  assert len(images) == len(BINARY_FIGURES)
  for tag in images:
    src = re.search(r'src="([^"]+)"', tag).group(1)
    width = int(re.search(r'data-natural-width="(\d+)"', tag).group(1))
    assert 'data-loaded="yes"' in tag, tag
    with Image.open(os.path.join(model_dir, src)) as im:
      assert width == im.size[0] > 0
  n = len(BINARY_FIGURES)
  assert f'{n} of {n} images loaded' in dom

  # Every number on the page is the one in metrics.json.
  cells = re.findall(r'data-key="([^"]+)"[^>]*>([^<]*)<', dom)
  keys = {html.unescape(k) for k, _ in cells}
  for split in ('eval', 'test'):
    for metric in ('accuracy', 'roc_auc', 'pr_auc', 'precision', 'recall', 'f1',
                   'log_loss', 'calibration_error', 'threshold'):
      assert f'{split}.{metric}' in keys
      assert f'at_threshold_0.5.{split}.{metric}' in keys
    for c in ('tn', 'fp', 'fn', 'tp'):
      assert f'{split}.confusion_matrix.{c}' in keys
    for column in SLICES:
      assert f'slices.splits.{split}.columns.{column}.0.recall' in keys
  assert 'threshold' in keys
  for raw_key, raw_text in cells:
    key, text = html.unescape(raw_key), html.unescape(raw_text).strip()
    assert text == _shown(_lookup(saved, key)), key
  # The page states the chosen threshold, not 0.5.
  assert saved['threshold'] != 0.5
  assert f'{saved["threshold"]:.4f}' in dom

  # The TFDV statistics link leads to the preprocess job's report.
  href = html.unescape(
      re.search(r'id="stats-link" href="([^"]+)"', dom).group(1))
  target = os.path.normpath(os.path.join(model_dir, href))
  assert target == os.path.normpath(
      os.path.join(saved['preprocess_dir'], 'stats', 'report.html'))
  assert os.path.isfile(target)


def test_slices_cover_every_row_and_match_the_overall_metrics(sliced_model):
  _, _, saved, _ = sliced_model
  sliced = saved['slices']
  assert sliced['available'] and sliced['columns'] == list(SLICES)
  # Numeric slice: quantile buckets of the eval values (3 -> 2 cut points).
  assert len(sliced['buckets']['height']) == 2
  for split in ('eval', 'test'):
    body = sliced['splits'][split]
    overall = body['overall']
    # The raw rows scored through the export are the rows the trainer
    # scored from the transformed records: the same confusion matrix.
    assert overall['rows'] == saved[split]['rows']
    assert overall['confusion_matrix'] == saved[split]['confusion_matrix']
    assert overall['roc_auc'] == pytest.approx(
        saved[split]['roc_auc'], abs=1e-6)
    assert overall['threshold'] == saved['threshold']
    for column in SLICES:
      rows = body['columns'][column]
      names = [r['slice'] for r in rows]
      assert len(names) == len(set(names)) >= 2
      assert sum(r['rows'] for r in rows) == overall['rows']
      correct = sum(r['accuracy'] * r['rows'] for r in rows)
      assert correct == pytest.approx(overall['accuracy'] * overall['rows'])
      positives = sum(r['base_rate'] * r['rows'] for r in rows)
      assert positives == pytest.approx(overall['base_rate'] * overall['rows'])
    height = [r['slice'] for r in body['columns']['height']]
    assert height[0].startswith('< ') and height[-2].startswith('>= ')
    assert height[-1] == slices.MISSING  # the toy data has missing heights
  # The slices are the same values on eval and test.
  assert ([
      r['slice'] for r in sliced['splits']['eval']['columns']['color']
  ] == [r['slice'] for r in sliced['splits']['test']['columns']['color']])


def test_balanced_class_weights_raise_recall_at_half(sliced_model,
                                                     trainer_toy_model,
                                                     trainer_toy_preprocessed):
  _, _, saved, _ = sliced_model
  _, plain = trainer_toy_model
  _, manifest = trainer_toy_preprocessed
  counts = saved['training']['train_label_counts']
  assert counts['negative'] + counts['positive'] == manifest['rows']['train']
  n = manifest['rows']['train']
  assert saved['training']['class_weight'] == {
      '0': pytest.approx(n / (2 * counts['negative'])),
      '1': pytest.approx(n / (2 * counts['positive']))
  }
  weighted = saved['at_threshold_0.5']['eval']
  unweighted = plain['at_threshold_0.5']['eval']
  assert weighted[
      'predicted_positive_rate'] > 2 * unweighted['predicted_positive_rate']
  assert weighted['recall'] > unweighted['recall']


def test_slices_without_raw_rows_or_columns(sliced_model, tmp_path):
  model_dir, _, saved, _ = sliced_model
  config = load_config(TOY_CONFIG)
  export_dir = resolve_export(model_dir).path
  missing = slices.slice_metrics(export_dir, str(tmp_path), config, ['city'], 4,
                                 0.5, ['eval'])
  assert not missing['available'] and '--write-raw' in missing['reason']
  none = slices.slice_metrics(export_dir, saved['preprocess_dir'], config, [],
                              4, 0.5, ['eval'])
  assert not none['available'] and 'slices' in none['reason']
  page = report.render(
      dict(saved, slices=missing), model_dir, heads.make_head(config))
  assert 'id="slices-unavailable"' in page and '--write-raw' in page


def test_slice_buckets_and_names():
  values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, np.nan])
  edges = slices.numeric_edges(values, 4)
  assert edges == [2.75, 4.5, 6.25]
  names = slices.numeric_slice_names(values, edges).tolist()
  assert names[:3] == ['< 2.75', '< 2.75', '[2.75, 4.5)']
  assert names[-2:] == ['>= 6.25', slices.MISSING]
  # A mostly-constant column: duplicate quantiles collapse.
  assert slices.numeric_edges(np.array([0.0] * 90 + [5.0] * 10), 4) == []
  assert slices.numeric_edges(np.array([0.0] * 60 + [5.0] * 40), 4) == [5.0]
  config = load_config(TOY_CONFIG)
  cats = slices.categorical_slice_names(
      np.array([' oslo', 'rome', '?', None, 'NA', 'lima'], dtype=object),
      config,
      keep=['oslo', 'rome'])
  assert cats.tolist() == [
      'oslo', 'rome', slices.MISSING, slices.MISSING, slices.MISSING,
      slices.OTHER
  ]
