"""The report's figures drawn by a child interpreter (trainer/plots.py)."""

import glob
import io
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image
import pytest

from trainer import evaluate
from trainer import plots

ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _binary_figures(folder):
  rng = np.random.default_rng(0)
  predictions = {}
  doc = {'threshold': 0.4}
  for split, rows in (('eval', 300), ('test', 500)):
    y = rng.integers(0, 2, rows).astype(np.float32)
    p = np.clip(0.35 * y + rng.random(rows) * 0.65, 0, 1).astype(np.float32)
    predictions[split] = (y, p)
    doc[split] = evaluate.binary_metrics(y, p, doc['threshold'])
  history = {
      'loss': [0.6, 0.5, 0.45],
      'val_loss': [0.62, 0.55, 0.5],
      'auc': [0.7, 0.8, 0.85],
      'val_auc': [0.68, 0.78, 0.8]
  }

  def path(name):
    return os.path.join(folder, name)

  return [
      plots.Figure(
          path('learning.png'), 'learning_curves',
          (history, 3, 'auc', 'ROC AUC')),
      plots.Figure(path('roc.png'), 'roc_curves', (predictions, doc)),
      plots.Figure(
          path('pr.png'), 'precision_recall_curves', (predictions, doc)),
      plots.Figure(
          path('confusion.png'), 'binary_confusion',
          (doc, ['eval', 'test'], ('no', 'yes'))),
      plots.Figure(path('calibration.png'), 'calibration', (predictions,)),
  ]


def _inputs_left():
  return set(glob.glob(os.path.join(tempfile.gettempdir(), 'figures-*')))


def test_the_child_draws_what_this_process_draws(tmp_path):
  figures = _binary_figures(str(tmp_path))
  before = _inputs_left()
  with plots.Drawing(figures) as drawing:
    drawn = drawing.result()
  assert drawn == {f.path: plots.png(f) for f in figures}
  for data in drawn.values():
    image = Image.open(io.BytesIO(data))
    assert image.format == 'PNG' and min(image.size) > 100
  assert _inputs_left() <= before
  plots.write(drawn)
  for f in figures:
    with open(f.path, 'rb') as written:
      assert written.read() == drawn[f.path]


def test_the_child_does_not_import_tensorflow():
  # Its import would take longer than the export the drawing hides behind.
  code = ('import sys, trainer.plots; '
          'print(sorted(m for m in ("tensorflow", "tf_keras") '
          'if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code],
                       cwd=ROOT,
                       capture_output=True,
                       text=True,
                       check=True,
                       timeout=120).stdout
  assert out.strip() == '[]'


def test_a_figure_that_cannot_be_drawn_fails_with_the_reason(tmp_path):
  figures = _binary_figures(str(tmp_path))
  # A document without the eval split's metrics.
  broken = figures[1]._replace(args=(figures[1].args[0], {'threshold': 0.4}))
  with plots.Drawing([figures[0], broken]) as drawing:
    with pytest.raises(RuntimeError, match=r"exit 1.*KeyError: 'eval'"):
      drawing.result()


def test_close_stops_a_child_still_drawing(tmp_path):
  before = _inputs_left()
  drawing = plots.Drawing(_binary_figures(str(tmp_path)) * 20)
  child = drawing._child  # pylint: disable=protected-access
  assert child is not None and child.poll() is None
  drawing.close()
  assert child.returncode is not None and child.returncode < 0
  assert _inputs_left() <= before
  drawing.close()  # a second close is harmless
  with pytest.raises(AssertionError, match='after close'):
    drawing.result()
