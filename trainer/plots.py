"""The report's figures: PNGs drawn with matplotlib on its Agg canvas.

Each function draws one figure from the run's own numbers (the metrics
document, the eval and test predictions, the Keras history) and returns it.
The object API on the Agg canvas needs no display and keeps no global pyplot
state.

A head says which figures its report shows as `Figure`s (which function,
with which arguments, for which path). `Drawing` draws them in a child
interpreter while the trainer goes on exporting the model: drawing is
Python-bound, so in a thread it would only take turns with the export, and
the child imports NumPy and matplotlib but not TensorFlow (about 1 s against
2 s of drawing, both hidden behind the export's 3 s on two cores). The child
returns the PNGs' bytes; the trainer writes them through tf.io.gfile, so a
remote model directory works as a local one.

    python -m trainer.plots INPUT   (the child: INPUT is a pickle of
                                     Figures, deleted once read; the PNGs'
                                     bytes by path go to stdout as a pickle)
"""

import io
import math
import os
import pickle
import subprocess
import sys
import tempfile
from typing import (
    Any,
    Dict,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
)

import numpy as np

from trainer import evaluate

# split -> (labels, model outputs)
Predictions = Mapping[str, Tuple[np.ndarray, np.ndarray]]

SPLIT_COLORS = {'eval': '#1f77b4', 'test': '#d62728', 'train': '#2ca02c'}
SCATTER_POINTS = 5000  # a fixed sample keeps a scatter plot's PNG light
# How long the trainer waits for the child once it needs the PNGs.
DRAWING_TIMEOUT_S = 300


class Figure(NamedTuple):
  """One PNG of the report: this module's `function(*args)`, for `path`."""
  path: str
  function: str
  args: Tuple


def png(figure: Figure) -> bytes:
  """The figure drawn, as PNG bytes."""
  fig = globals()[figure.function](*figure.args)
  fig.tight_layout()
  out = io.BytesIO()
  fig.savefig(out, format='png', dpi=100)
  return out.getvalue()


def write(pngs: Mapping[str, bytes]) -> None:
  """Writes each PNG to its path (local or remote)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  for path, data in pngs.items():
    with tf.io.gfile.GFile(path, 'wb') as f:
      f.write(data)


class Drawing:
  """Figures being drawn by a child interpreter; `result()` waits for their
  PNGs, `close()` (also on the way out of a `with`) stops the child if it
  still runs."""

  def __init__(self, figures: Sequence[Figure]):
    with tempfile.NamedTemporaryFile(
        prefix='figures-', suffix='.pickle', delete=False) as f:
      pickle.dump(list(figures), f, protocol=pickle.HIGHEST_PROTOCOL)
      self._input = f.name
    # The child finds this package where this interpreter found it.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (root, env.get('PYTHONPATH')) if p)
    self._returncode: Optional[int] = None
    self._child: Optional[subprocess.Popen] = subprocess.Popen(
        [sys.executable, '-m', 'trainer.plots', self._input],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env)

  def result(self) -> Dict[str, bytes]:
    assert self._child is not None, 'result() after close()'
    try:
      out, err = self._child.communicate(timeout=DRAWING_TIMEOUT_S)
    except subprocess.TimeoutExpired:
      raise RuntimeError(f'the report\'s figures were not drawn within '
                         f'{DRAWING_TIMEOUT_S} s') from None
    finally:
      self.close()
    if self._returncode:
      tail = err.decode('utf-8', 'replace').strip().splitlines()[-5:]
      raise RuntimeError(
          f'drawing the report\'s figures failed (exit {self._returncode}): ' +
          ' | '.join(tail))
    return pickle.loads(out)

  def close(self) -> None:
    child, self._child = self._child, None
    if child is not None:
      if child.poll() is None:
        child.kill()
      child.wait()
      for stream in (child.stdout, child.stderr):
        if stream is not None:
          stream.close()
      self._returncode = child.returncode
    try:
      os.unlink(self._input)
    except FileNotFoundError:
      pass  # the child deletes it once read

  def __enter__(self) -> 'Drawing':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def _subplots(nrows=1, ncols=1, figsize=(5.5, 5), squeeze=True):
  # Matplotlib's object API on the Agg canvas: no pyplot, no global backend
  # state, no display needed. Imported when a figure is drawn: the heads
  # import this module, and commands that only score with them (trainer.push)
  # would pay for matplotlib's import (0.6-0.8 s) without drawing anything.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure as MplFigure  # pylint: disable=g-import-not-at-top

  fig = MplFigure(figsize=figsize)
  FigureCanvasAgg(fig)
  return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def learning_curves(history: Mapping[str, Sequence[float]],
                    best_epoch: Optional[int], metric: str,
                    metric_title: str) -> Any:
  """Loss and `metric` per epoch, train and eval, the best epoch marked."""
  fig, axes = _subplots(1, 2, figsize=(10, 4))
  for ax, key, title in ((axes[0], 'loss', 'loss'), (axes[1], metric,
                                                     metric_title)):
    for prefix, split in (('', 'train'), ('val_', 'eval')):
      values = history.get(prefix + key)
      if values:
        ax.plot(
            range(1,
                  len(values) + 1),
            values,
            marker='.',
            color=SPLIT_COLORS[split],
            label=split)
    if best_epoch:
      ax.axvline(
          best_epoch, ls='--', color='grey', label=f'best epoch {best_epoch}')
    ax.set(xlabel='epoch', title=title)
    ax.legend()
  return fig


# ------------------------------------------------------------------ binary


def roc_curves(predictions: Predictions, doc: Mapping[str, Any]) -> Any:
  """ROC curve per split, the chosen threshold's point marked."""
  fig, ax = _subplots()
  for split, (y, p) in predictions.items():
    c = evaluate.roc_curve(y, p)
    ax.plot(
        c['fpr'],
        c['tpr'],
        color=SPLIT_COLORS.get(split),
        label=f'{split} (AUC {doc[split]["roc_auc"]:.4f})')
    cm = doc[split]['confusion_matrix']
    ax.plot(
        cm['fp'] / max(cm['fp'] + cm['tn'], 1),
        cm['tp'] / max(cm['tp'] + cm['fn'], 1),
        'o',
        color=SPLIT_COLORS.get(split))
  ax.plot([0, 1], [0, 1], ':', color='grey', label='chance')
  ax.set(
      xlabel='false positive rate',
      ylabel='true positive rate',
      title=f'ROC (dots: threshold {doc["threshold"]:.3f})',
      xlim=(0, 1),
      ylim=(0, 1.01))
  ax.legend(loc='lower right')
  return fig


def precision_recall_curves(predictions: Predictions, doc: Mapping[str,
                                                                   Any]) -> Any:
  """Precision-recall curve per split, the threshold's point and the base
  rate marked."""
  fig, ax = _subplots()
  for split, (y, p) in predictions.items():
    c = evaluate.pr_curve(y, p)
    ax.step(
        np.r_[0.0, c['recall']],
        np.r_[1.0, c['precision']],
        where='post',
        color=SPLIT_COLORS.get(split),
        label=f'{split} (AP {doc[split]["pr_auc"]:.4f})')
    ax.plot(
        doc[split]['recall'],
        doc[split]['precision'],
        'o',
        color=SPLIT_COLORS.get(split))
    ax.axhline(
        doc[split]['base_rate'], ls=':', color=SPLIT_COLORS.get(split), lw=0.8)
  ax.set(
      xlabel='recall',
      ylabel='precision',
      title=f'Precision-recall (dots: threshold {doc["threshold"]:.3f})',
      xlim=(0, 1),
      ylim=(0, 1.01))
  ax.legend(loc='lower left')
  return fig


def binary_confusion(doc: Mapping[str, Any], splits: Sequence[str],
                     classes: Sequence[str]) -> Any:
  """The 2 x 2 counts at the threshold per split; `classes` are the
  negative and the positive class's names."""
  fig, axes = _subplots(
      1, len(splits), figsize=(4.2 * len(splits), 3.8), squeeze=False)
  for ax, split in zip(axes[0], splits, strict=True):
    cm = doc[split]['confusion_matrix']
    grid = np.array([[cm['tn'], cm['fp']], [cm['fn'], cm['tp']]])
    ax.imshow(grid, cmap='Blues')
    for (i, j), v in np.ndenumerate(grid):
      ax.text(
          j,
          i,
          f'{v:,d}',
          ha='center',
          va='center',
          color='white' if v > grid.max() / 2 else 'black',
          fontsize=12)
    ax.set_xticks([0, 1], labels=classes)
    ax.set_yticks([0, 1], labels=classes)
    ax.set(
        xlabel='predicted',
        ylabel='true',
        title=f'{split} (threshold {doc["threshold"]:.3f})')
  return fig


def calibration(predictions: Predictions) -> Any:
  """Reliability diagram (ten bins) and the histogram of probabilities."""
  fig, axes = _subplots(1, 2, figsize=(10, 4.2))
  ax = axes[0]
  ax.plot([0, 1], [0, 1], ':', color='grey', label='perfectly calibrated')
  for split, (y, p) in predictions.items():
    c = evaluate.calibration(y, p)
    ax.plot(
        c['mean_predicted'],
        c['observed_rate'],
        marker='o',
        color=SPLIT_COLORS.get(split),
        label=split)
  ax.set(
      xlabel='mean predicted probability (10 bins)',
      ylabel='observed positive rate',
      title='Calibration',
      xlim=(0, 1),
      ylim=(0, 1))
  ax.legend(loc='upper left')
  ax = axes[1]
  for split, (_, p) in predictions.items():
    ax.hist(
        p,
        bins=40,
        range=(0, 1),
        histtype='step',
        lw=1.5,
        color=SPLIT_COLORS.get(split),
        label=split)
  ax.set(
      xlabel='predicted probability',
      ylabel='rows',
      yscale='log',
      title='Distribution of predictions')
  ax.legend()
  return fig


# -------------------------------------------------------------- multiclass


def class_confusion(doc: Mapping[str, Any], splits: Sequence[str]) -> Any:
  """K x K counts per split, each row shaded by its share of the true
  class (so rare classes stay readable)."""
  k = len(doc[splits[0]]['classes'])
  size = max(4.2, 0.55 * k + 2)
  fig, axes = _subplots(
      1, len(splits), figsize=(size * len(splits), size), squeeze=False)
  for ax, split in zip(axes[0], splits, strict=True):
    classes = doc[split]['classes']
    grid = np.array(doc[split]['confusion_matrix'], dtype=np.int64)
    share = grid / np.maximum(grid.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap='Blues', vmin=0, vmax=1)
    if k <= 20:
      for (i, j), v in np.ndenumerate(grid):
        ax.text(
            j,
            i,
            f'{v:,d}',
            ha='center',
            va='center',
            fontsize=9,
            color='white' if share[i, j] > 0.5 else 'black')
    ax.set_xticks(range(k), labels=classes, rotation=45, ha='right')
    ax.set_yticks(range(k), labels=classes)
    ax.set(xlabel='predicted', ylabel='true', title=split)
  return fig


# -------------------------------------------------------------- regression


def predicted_vs_actual(predictions: Predictions, log_scale: bool) -> Any:
  """Prediction against label per split (label units), y = x dotted;
  symlog axes for a label fitted on the log scale."""
  fig, ax = _subplots(figsize=(5.5, 5))
  low, high = math.inf, -math.inf
  rng = np.random.default_rng(0)
  for split, (labels, outputs) in predictions.items():
    y, p = labels, outputs
    if y.size > SCATTER_POINTS:
      keep = rng.choice(y.size, SCATTER_POINTS, replace=False)
      y, p = y[keep], p[keep]
    if y.size:
      low = min(low, float(y.min()), float(p.min()))
      high = max(high, float(y.max()), float(p.max()))
    ax.scatter(y, p, s=6, alpha=0.4, color=SPLIT_COLORS.get(split), label=split)
  if math.isfinite(low):
    ax.plot([low, high], [low, high], ':', color='grey', label='y = x')
  if log_scale:
    ax.set(xscale='symlog', yscale='symlog')
  ax.set(xlabel='actual', ylabel='predicted', title='Predicted vs actual')
  ax.legend(loc='upper left')
  return fig


def residuals(predictions: Predictions) -> Any:
  """The distribution of prediction - label per split (label units)."""
  fig, ax = _subplots(figsize=(5.5, 4.2))
  for split, (y, p) in predictions.items():
    err = p - y
    if err.size:
      ax.hist(
          err,
          bins=50,
          histtype='step',
          lw=1.5,
          color=SPLIT_COLORS.get(split),
          label=split)
  ax.axvline(0, ls=':', color='grey')
  ax.set(
      xlabel='predicted - actual',
      ylabel='rows',
      title='Distribution of errors')
  ax.legend()
  return fig


def _main(argv: List[str]) -> int:
  with open(argv[1], 'rb') as f:
    figures = pickle.load(f)
  os.unlink(argv[1])
  pngs = {figure.path: png(figure) for figure in figures}
  sys.stdout.buffer.write(pickle.dumps(pngs, protocol=pickle.HIGHEST_PROTOCOL))
  return 0


if __name__ == '__main__':
  sys.exit(_main(sys.argv))
