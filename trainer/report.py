"""MDIR/report.html: what the trained model does, on one page a person opens.

Everything on the page comes from the run's own outputs: the metrics document
(the very numbers in metrics.json), the eval and test predictions the metrics
were computed from, and the Keras history. Every number on the page carries a
data-key naming where in metrics.json it comes from. Figures are PNGs beside
the page (trainer/plots.py):

  learning_curves.png        loss and the watched metric per epoch, train
                             and eval (every model)
  roc.png, pr.png            binary: ROC and precision-recall curves, eval
                             and test, the chosen threshold marked
  confusion_matrix.png       binary: at the chosen threshold; multiclass:
                             K x K
  calibration.png            binary: reliability diagram and score histogram
  predicted_vs_actual.png,   regression: in the label's units
  residuals.png

This module assembles the page: a header, the head's section (its metrics and
what they say, trainer/heads/), and a link to the preprocess job's statistics
report. It holds the pieces the heads' sections are built from (metrics
tables, number cells, figure tags); the HTML primitives and the style sheet
are core/html.py's, shared with the statistics report.
"""

import math
import os
from typing import Any, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from core import html
from core.layout import ModelDir
from core.layout import PreprocessOutput
from trainer import evaluate
from trainer import plots

# Every figure a report may show, by key; a head draws its own.
FIGURES = {
    'learning': 'learning_curves.png',
    'roc': 'roc.png',
    'pr': 'pr.png',
    'confusion': 'confusion_matrix.png',
    'calibration': 'calibration.png',
    'scatter': 'predicted_vs_actual.png',
    'residuals': 'residuals.png',
}

# Records, once the page has loaded, how every image decoded: its
# naturalWidth (0 for a broken image) goes into the DOM, so a test of the
# rendered page can check each plot without reading pixels.
_IMAGE_CHECK_SCRIPT = '''
window.addEventListener('load', function () {
  var images = document.querySelectorAll('img');
  var loaded = 0;
  images.forEach(function (img) {
    var ok = img.complete && img.naturalWidth > 0;
    img.setAttribute('data-natural-width', String(img.naturalWidth));
    img.setAttribute('data-loaded', ok ? 'yes' : 'no');
    if (ok) { loaded += 1; }
  });
  var status = document.getElementById('image-status');
  status.textContent = loaded + ' of ' + images.length + ' images loaded';
  status.setAttribute('data-loaded', String(loaded));
  status.setAttribute('data-total', String(images.length));
});
'''

# ------------------------------------------------------ pieces of sections


def fmt(value: Any, spec: str) -> str:
  """How the page writes a number (the test formats metrics.json alike)."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return 'n/a'
  return spec.format(value)


def number_cell(value: Any, spec: str, key: str) -> str:
  """A figure's cell, keyed to its place in metrics.json."""
  return html.cell(fmt(value, spec), class_='num', data_key=key)


def metrics_table(doc: Mapping[str, Any],
                  splits: Sequence[str],
                  rows: Sequence[Tuple[str, str, str]],
                  source_key: str = '',
                  key_prefix: str = '') -> str:
  """One row per (metric key, title, format) of `rows`, one column per
  split, from doc[split] (doc[source_key][split] when given); a metric a
  split lacks is an empty cell."""
  body = []
  for key, title, spec in rows:
    cells = [html.cell(title, 'th', scope='row')]
    for s in splits:
      m = doc[source_key][s] if source_key else doc[s]
      cells.append(
          number_cell(m[key], spec, f'{key_prefix}{s}.{key}') if key in
          m else html.cell(''))
    body.append(html.row(cells))
  return html.table(
      [html.cell('metric', 'th')] + [html.cell(s, 'th') for s in splits],
      body,
      class_='metrics')


def img(key: str, alt: str) -> str:
  """The <img> of FIGURES[key]."""
  return (f'<img src="{FIGURES[key]}" alt="{html.escape(alt)}" '
          f'data-plot="{key}">')


def figure_path(model_dir: str, key: str) -> str:
  return os.path.join(model_dir, FIGURES[key])


# -------------------------------------------------------------------- page


def _page_header(doc: Mapping[str, Any], title: str) -> str:
  e = html.escape
  return f'''<h1>{e(title)}</h1>
<p class="muted">Created {e(doc.get("created", ""))}; model
<code>{e(doc.get("export_dir", ""))}</code>; numbers from
<a href="metrics.json">metrics.json</a>.
<span id="image-status">images not checked (scripts off?)</span></p>'''


def _stats_link(model_dir: str, preprocess_dir: str) -> str:
  target = PreprocessOutput(preprocess_dir).stats_report_path
  if not tf.io.gfile.exists(target):
    return (f'<p class="note">No TFDV statistics report at '
            f'{html.escape(target)}.</p>')
  if '://' in target:
    href = target
  else:
    href = os.path.relpath(os.path.abspath(target), os.path.abspath(model_dir))
  return (f'<p><a id="stats-link" href="{html.escape(href)}">TFDV statistics '
          'of the preprocessed splits</a> (the preprocess job\'s '
          'stats/report.html)</p>')


def render(doc: Mapping[str, Any], model_dir: str, head) -> str:
  """The page of the model whose metrics document is `doc`; `head`
  (trainer/heads) writes its metrics section."""
  splits = evaluate.splits_in_order(s for s in ('eval', 'test') if s in doc)
  title = f'{doc.get("dataset", "model")}: evaluation report'
  body = (f'\n{_page_header(doc, title)}\n\n'
          f'{head.report_section(doc, splits)}<h2>Data</h2>\n'
          f'{_stats_link(model_dir, doc.get("preprocess_dir", ""))}\n')
  return html.page(title, body, html.MODEL_REPORT_STYLE, _IMAGE_CHECK_SCRIPT)


def figures(model_dir: str, doc: Mapping[str, Any],
            predictions: Mapping[str, Tuple[np.ndarray, np.ndarray]],
            head) -> List[plots.Figure]:
  """The figures of the page of the model whose metrics document is `doc`
  (its metrics and training history), `predictions` split -> (labels,
  model outputs) for the splits in it."""
  splits = evaluate.splits_in_order(s for s in predictions if s in doc)
  return head.figures(model_dir, doc, {s: predictions[s] for s in splits},
                      splits)


def write_report(model_dir: str, doc: Mapping[str, Any], head,
                 pngs: Mapping[str, bytes]) -> str:
  """Writes the figures' PNGs (path -> bytes, drawn from `figures()`) and
  MDIR/report.html; returns the page's path.

  `doc` is the metrics document, as written to metrics.json.
  """
  plots.write(pngs)
  path = ModelDir(model_dir).report_path
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(render(doc, model_dir, head))
  return path
