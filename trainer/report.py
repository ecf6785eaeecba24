"""MDIR/report.html: what the trained model does, on one page a person opens.

Everything on the page comes from the run's own outputs: the metrics document
(the very numbers in metrics.json), the eval and test predictions the metrics
were computed from, and the Keras history. Plots are PNGs beside the page,
drawn with matplotlib on its Agg canvas (no display needed):

  roc.png, pr.png            ROC and precision-recall curves, eval and test,
                             the chosen threshold marked
  confusion_matrix.png       at the chosen threshold, eval and test
  learning_curves.png        loss and AUC per epoch, train and eval
  calibration.png            reliability diagram and the score histogram

That page is a binary classifier's. A multiclass model's page has per-class
metrics and a K x K confusion_matrix.png; a regression model's has
predicted_vs_actual.png and residuals.png (in the label's units); both have
the learning curves of the metric early stopping watched.

Per-slice metrics: the transformed TFRecords hold no raw column values, so the
slices are computed from the raw rows the preprocess job writes with
--write-raw (DIR/raw/{split}-*.tfrecord.gz), scored through the exported
SavedModel's serving_default signature. That is the route a served request
takes (raw tf.Example in, the export's own transform graph and threshold), and
the overall metrics of those raw rows are recorded next to the slices so they
can be checked against the metrics of the transformed rows. Which raw columns
slice the metrics is the config's `model: slices` list; numeric columns are
cut into `slice_buckets` quantile buckets of the eval split's values.
"""

import html
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

# Matplotlib's object API on the Agg canvas: no pyplot, no global backend
# state, no display needed.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
import tensorflow as tf

from pipeline import features as raw_features
from pipeline.config import MULTICLASS, DatasetConfig
from trainer import evaluate, export

REPORT_FILE = 'report.html'
RAW_DIR = 'raw'
STATS_REPORT = os.path.join('stats', 'report.html')
MAX_CATEGORIES = 15  # larger slices shown one by one, the rest as "(other)"
OTHER = '(other)'
MISSING = '(missing)'
IMAGES = {
    'roc': 'roc.png',
    'pr': 'pr.png',
    'confusion': 'confusion_matrix.png',
    'learning': 'learning_curves.png',
    'calibration': 'calibration.png',
}
_SPLIT_COLORS = {'eval': '#1f77b4', 'test': '#d62728', 'train': '#2ca02c'}
_BATCH = 4096


# ----------------------------------------------------------------- slices


def _raw_files(preprocess_dir: str, split: str) -> List[str]:
  return sorted(tf.io.gfile.glob(
      os.path.join(preprocess_dir, RAW_DIR, f'{split}-*.tfrecord.gz')))


def _score_raw(export_dir: str, config: DatasetConfig, files: Sequence[str],
               columns: Sequence[str]
              ) -> Tuple[np.ndarray, np.ndarray, Dict[str, np.ndarray]]:
  """(labels, probabilities, raw column values) of raw tf.Example rows,
  scored by the export's serving_default signature."""
  loaded = tf.saved_model.load(export_dir)
  serve = loaded.signatures[export.DEFAULT_SIGNATURE]
  spec = raw_features.raw_feature_spec(config, include_label=True)
  label_col = config.label.column
  wanted = [label_col] + [c for c in columns if c != label_col]
  labels, probs, values = [], [], {c: [] for c in wanted}
  ds = tf.data.TFRecordDataset(list(files), compression_type='GZIP').batch(
      _BATCH)
  for batch in ds:
    out = serve(**{export.EXAMPLES_INPUT: batch})
    probs.append(out[export.PROBABILITIES].numpy().reshape(-1))
    parsed = tf.io.parse_example(batch, {c: spec[c] for c in wanted})
    for c in wanted:
      values[c].append(_dense(parsed[c], _is_string(config, c)))
  raw_labels = np.concatenate(values.pop(label_col))
  aliases = config.label.aliases
  strings = [aliases.get(v.strip(), v.strip()) if v is not None else None
             for v in raw_labels]
  labels = np.array([s == config.label.positive for s in strings])
  known = np.array([s in config.label.classes for s in strings])
  probs = np.concatenate(probs)
  out_values = {c: np.concatenate(v)[known] for c, v in values.items()}
  return labels[known], probs[known], out_values


def _is_string(config: DatasetConfig, name: str) -> bool:
  column = config.column(name)
  return getattr(column, 'raw_type', column.type) == 'string'


def _dense(sparse: tf.SparseTensor, is_string: bool) -> np.ndarray:
  """One value per row (the first of a list); None (strings) or NaN
  (numbers) where missing."""
  n = int(sparse.dense_shape[0])
  indices = sparse.indices.numpy()
  first = np.r_[True, indices[1:, 0] != indices[:-1, 0]] if len(
      indices) else np.zeros(0, bool)
  rows = indices[first, 0]
  vals = sparse.values.numpy()[first]
  if is_string:
    out = np.full(n, None, dtype=object)
    out[rows] = [v.decode('utf-8', 'replace') for v in vals]
  else:
    out = np.full(n, np.nan, dtype=np.float64)
    out[rows] = vals.astype(np.float64)
  return out


def numeric_edges(values: np.ndarray, buckets: int) -> List[float]:
  """Inner cut points: the distinct quantiles at 1/buckets, 2/buckets, ..."""
  v = values[np.isfinite(values)]
  if not v.size:
    return []
  qs = np.quantile(v, [i / buckets for i in range(1, buckets)])
  return sorted({float(q) for q in qs if v.min() < q <= v.max()})


def _fmt_number(x: float) -> str:
  return f'{x:g}'


def numeric_slice_names(values: np.ndarray, edges: Sequence[float]
                       ) -> np.ndarray:
  """'[a, b)' bucket names (first '< b', last '>= a'); missing separately."""
  names = []
  bounds = list(edges)
  labels = []
  for i in range(len(bounds) + 1):
    if not bounds:
      labels.append('all')
    elif i == 0:
      labels.append(f'< {_fmt_number(bounds[0])}')
    elif i == len(bounds):
      labels.append(f'>= {_fmt_number(bounds[-1])}')
    else:
      labels.append(f'[{_fmt_number(bounds[i - 1])}, '
                    f'{_fmt_number(bounds[i])})')
  idx = np.searchsorted(np.asarray(bounds), values, side='right')
  for v, i in zip(values, idx):
    names.append(MISSING if not np.isfinite(v) else labels[i])
  return np.array(names, dtype=object)


def categorical_slice_names(values: np.ndarray, config: DatasetConfig,
                            keep: Optional[Sequence[str]] = None
                           ) -> np.ndarray:
  """Trimmed values, missing tokens as one slice, rare ones as '(other)'."""
  missing = set(config.missing_values)
  names = np.array([MISSING if v is None or v.strip() in missing
                    else v.strip() for v in values], dtype=object)
  if keep is not None:
    keep = set(keep)
    names = np.array([n if n in keep or n == MISSING else OTHER
                      for n in names], dtype=object)
  return names


def _slice_row(name: str, y: np.ndarray, p: np.ndarray,
               threshold: float) -> Dict[str, Any]:
  m = evaluate.binary_metrics(y, p, threshold)
  return {
      'slice': name,
      'rows': m['rows'],
      'base_rate': m['base_rate'],
      'predicted_positive_rate': m['predicted_positive_rate'],
      'accuracy': m['accuracy'],
      'precision': m['precision'],
      'recall': m['recall'],
      'f1': m['f1'],
      'roc_auc': m['roc_auc'],
  }


def slice_metrics(export_dir: str, preprocess_dir: str, config: DatasetConfig,
                  columns: Sequence[str], buckets: int, threshold: float,
                  splits: Sequence[str]) -> Dict[str, Any]:
  """Metrics per value of each slice column, per split, at `threshold`.

  Returns {'available': False, 'reason': ...} when there is nothing to slice
  (no slices configured, or no raw rows), else
  {'available': True, 'columns': [...], 'source': ..., 'splits': {split:
  {'overall': metrics of all raw rows, 'columns': {column: [slice rows]}}}}.
  """
  columns = list(columns)
  if not columns:
    return {'available': False, 'columns': [],
            'reason': 'no slice columns configured (model: slices)'}
  files = {s: _raw_files(preprocess_dir, s) for s in splits}
  files = {s: f for s, f in files.items() if f}
  if not files:
    return {'available': False, 'columns': columns,
            'reason': f'no raw rows in {os.path.join(preprocess_dir, RAW_DIR)}'
                      ' (run the preprocess job with --write-raw)'}
  scored = {s: _score_raw(export_dir, config, f, columns)
            for s, f in files.items()}
  reference = scored['eval' if 'eval' in scored else next(iter(scored))]
  out: Dict[str, Any] = {
      'available': True, 'columns': columns,
      'source': 'raw rows (preprocess --write-raw) scored by the export',
      'buckets': {}, 'splits': {}}
  # Bucket edges and the categories shown come from one split (eval), so the
  # slices of every split are the same.
  plan = {}
  for c in columns:
    if _is_string(config, c):
      names = categorical_slice_names(reference[2][c], config)
      uniq, counts = np.unique(names[names != MISSING], return_counts=True)
      top = [str(u) for u, _ in sorted(zip(uniq, counts),
                                       key=lambda t: (-t[1], t[0]))]
      plan[c] = ('string', top[:MAX_CATEGORIES] if len(top) > MAX_CATEGORIES
                 else None, top[:MAX_CATEGORIES])
    else:
      edges = numeric_edges(reference[2][c], buckets)
      plan[c] = ('number', edges, None)
      out['buckets'][c] = edges
  for split, (y, p, values) in scored.items():
    per_column = {}
    for c in columns:
      kind, arg, order = plan[c]
      if kind == 'string':
        names = categorical_slice_names(values[c], config, arg)
      else:
        names = numeric_slice_names(values[c], arg)
      rows = []
      for name in _slice_order(names, kind, arg, order):
        mask = names == name
        rows.append(_slice_row(str(name), y[mask], p[mask], threshold))
      per_column[c] = rows
    out['splits'][split] = {
        'overall': evaluate.binary_metrics(y, p, threshold),
        'columns': per_column}
  return out


def _slice_order(names: np.ndarray, kind: str, edges, order) -> List[str]:
  """Numeric buckets low to high; categories in the reference split's order
  (most rows first), then any it lacks; '(other)' and '(missing)' last."""
  present = set(names.tolist())
  if kind == 'number':
    # One probe value per bucket, lowest first, then missing.
    probes = ([edges[0] - 1.0] + list(edges)) if edges else [0.0]
    ordered = list(dict.fromkeys(numeric_slice_names(
        np.array(probes + [np.nan]), edges).tolist()))
  else:
    uniq, counts = np.unique(names, return_counts=True)
    by_count = [str(u) for u, _ in sorted(zip(uniq, counts),
                                          key=lambda t: (-t[1], t[0]))]
    ordered = list(order) + [n for n in by_count if n not in order]
    ordered = [o for o in ordered if o not in (OTHER, MISSING)] + [
        OTHER, MISSING]
  return [o for o in ordered if o in present]


# ------------------------------------------------------------------ plots


def _subplots(nrows=1, ncols=1, figsize=(5.5, 5), squeeze=True):
  fig = Figure(figsize=figsize)
  FigureCanvasAgg(fig)
  return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def _save(fig, path: str) -> None:
  fig.tight_layout()
  with tf.io.gfile.GFile(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=100)


def _plot_roc(predictions, doc, path):
  fig, ax = _subplots()
  for split, (y, p) in predictions.items():
    c = evaluate.roc_curve(y, p)
    ax.plot(c['fpr'], c['tpr'], color=_SPLIT_COLORS.get(split),
            label=f'{split} (AUC {doc[split]["roc_auc"]:.4f})')
    cm = doc[split]['confusion_matrix']
    ax.plot(cm['fp'] / max(cm['fp'] + cm['tn'], 1),
            cm['tp'] / max(cm['tp'] + cm['fn'], 1), 'o',
            color=_SPLIT_COLORS.get(split))
  ax.plot([0, 1], [0, 1], ':', color='grey', label='chance')
  ax.set(xlabel='false positive rate', ylabel='true positive rate',
         title=f'ROC (dots: threshold {doc["threshold"]:.3f})',
         xlim=(0, 1), ylim=(0, 1.01))
  ax.legend(loc='lower right')
  _save(fig, path)


def _plot_pr(predictions, doc, path):
  fig, ax = _subplots()
  for split, (y, p) in predictions.items():
    c = evaluate.pr_curve(y, p)
    ax.step(np.r_[0.0, c['recall']], np.r_[1.0, c['precision']], where='post',
            color=_SPLIT_COLORS.get(split),
            label=f'{split} (AP {doc[split]["pr_auc"]:.4f})')
    ax.plot(doc[split]['recall'], doc[split]['precision'], 'o',
            color=_SPLIT_COLORS.get(split))
    ax.axhline(doc[split]['base_rate'], ls=':', color=_SPLIT_COLORS.get(split),
               lw=0.8)
  ax.set(xlabel='recall', ylabel='precision',
         title=f'Precision-recall (dots: threshold {doc["threshold"]:.3f})',
         xlim=(0, 1), ylim=(0, 1.01))
  ax.legend(loc='lower left')
  _save(fig, path)


def _plot_confusion(doc, splits, classes, path):
  fig, axes = _subplots(1, len(splits), figsize=(4.2 * len(splits), 3.8),
                        squeeze=False)
  for ax, split in zip(axes[0], splits):
    cm = doc[split]['confusion_matrix']
    grid = np.array([[cm['tn'], cm['fp']], [cm['fn'], cm['tp']]])
    ax.imshow(grid, cmap='Blues')
    for (i, j), v in np.ndenumerate(grid):
      ax.text(j, i, f'{v:,d}', ha='center', va='center',
              color='white' if v > grid.max() / 2 else 'black', fontsize=12)
    ax.set_xticks([0, 1], labels=classes)
    ax.set_yticks([0, 1], labels=classes)
    ax.set(xlabel='predicted', ylabel='true',
           title=f'{split} (threshold {doc["threshold"]:.3f})')
  _save(fig, path)


def _plot_learning(history: Mapping[str, Sequence[float]], best_epoch, path,
                   metric: str = 'auc', metric_title: str = 'ROC AUC (streaming)'):
  fig, axes = _subplots(1, 2, figsize=(10, 4))
  for ax, key, title in ((axes[0], 'loss', 'loss'),
                         (axes[1], metric, metric_title)):
    for prefix, split in (('', 'train'), ('val_', 'eval')):
      values = history.get(prefix + key)
      if values:
        ax.plot(range(1, len(values) + 1), values, marker='.',
                color=_SPLIT_COLORS[split], label=split)
    if best_epoch:
      ax.axvline(best_epoch, ls='--', color='grey',
                 label=f'best epoch {best_epoch}')
    ax.set(xlabel='epoch', title=title)
    ax.legend()
  _save(fig, path)


def _plot_calibration(predictions, path):
  fig, axes = _subplots(1, 2, figsize=(10, 4.2))
  ax = axes[0]
  ax.plot([0, 1], [0, 1], ':', color='grey', label='perfectly calibrated')
  for split, (y, p) in predictions.items():
    c = evaluate.calibration(y, p)
    ax.plot(c['mean_predicted'], c['observed_rate'], marker='o',
            color=_SPLIT_COLORS.get(split), label=split)
  ax.set(xlabel='mean predicted probability (10 bins)',
         ylabel='observed positive rate', title='Calibration', xlim=(0, 1),
         ylim=(0, 1))
  ax.legend(loc='upper left')
  ax = axes[1]
  for split, (_, p) in predictions.items():
    ax.hist(p, bins=40, range=(0, 1), histtype='step', lw=1.5,
            color=_SPLIT_COLORS.get(split), label=split)
  ax.set(xlabel='predicted probability', ylabel='rows', yscale='log',
         title='Distribution of predictions')
  ax.legend()
  _save(fig, path)


# ------------------------------------------------------------------- HTML

_METRIC_ROWS = [
    ('rows', 'rows', '{:,d}'),
    ('accuracy', 'accuracy', '{:.4f}'),
    ('roc_auc', 'ROC AUC', '{:.4f}'),
    ('pr_auc', 'PR AUC (average precision)', '{:.4f}'),
    ('precision', 'precision', '{:.4f}'),
    ('recall', 'recall', '{:.4f}'),
    ('f1', 'F1', '{:.4f}'),
    ('log_loss', 'log loss', '{:.4f}'),
    ('calibration_error', 'expected calibration error', '{:.4f}'),
    ('base_rate', 'base rate', '{:.4f}'),
    ('predicted_positive_rate', 'predicted positive rate', '{:.4f}'),
    ('threshold', 'threshold', '{:.4f}'),
]
_SLICE_COLUMNS = [
    ('rows', 'rows', '{:,d}'), ('base_rate', 'base rate', '{:.4f}'),
    ('predicted_positive_rate', 'predicted positive', '{:.4f}'),
    ('accuracy', 'accuracy', '{:.4f}'), ('precision', 'precision', '{:.4f}'),
    ('recall', 'recall', '{:.4f}'), ('f1', 'F1', '{:.4f}'),
    ('roc_auc', 'ROC AUC', '{:.4f}'),
]


def fmt(value: Any, spec: str) -> str:
  """How the page writes a number (the test formats metrics.json alike)."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return 'n/a'
  return spec.format(value)


def _e(x: Any) -> str:
  return html.escape(str(x), quote=True)


def _cell(value, spec, key):
  return f'<td class="num" data-key="{_e(key)}">{_e(fmt(value, spec))}</td>'


def _metrics_table(doc, splits, source_key=None, key_prefix='',
                   metric_rows=_METRIC_ROWS):
  head = ''.join(f'<th>{_e(s)}</th>' for s in splits)
  rows = []
  for key, title, spec in metric_rows:
    cells = []
    for s in splits:
      m = doc[source_key][s] if source_key else doc[s]
      if key not in m:
        cells.append('<td></td>')
        continue
      cells.append(_cell(m[key], spec, f'{key_prefix}{s}.{key}'))
    rows.append(f'<tr><th scope="row">{_e(title)}</th>{"".join(cells)}</tr>')
  return (f'<table class="metrics"><thead><tr><th>metric</th>{head}</tr>'
          f'</thead><tbody>{"".join(rows)}</tbody></table>')


def _confusion_tables(doc, splits, classes):
  out = []
  neg, pos = classes
  for s in splits:
    cm = doc[s]['confusion_matrix']
    def c(k, s=s, cm=cm):
      return f'<td class="num" data-key="{_e(s)}.confusion_matrix.{k}">' \
             f'{cm[k]:,d}</td>'
    out.append(
        f'<table class="confusion"><caption>{_e(s)}</caption>'
        f'<tr><th></th><th>predicted {_e(neg)}</th><th>predicted {_e(pos)}'
        f'</th></tr><tr><th>true {_e(neg)}</th>{c("tn")}{c("fp")}</tr>'
        f'<tr><th>true {_e(pos)}</th>{c("fn")}{c("tp")}</tr></table>')
  return ''.join(out)


def _slices_html(slices: Mapping[str, Any]) -> str:
  if not slices or not slices.get('available'):
    reason = (slices or {}).get('reason', 'no slices')
    return f'<p class="note" id="slices-unavailable">{_e(reason)}</p>'
  parts = [f'<p>Source: {_e(slices["source"])}. Metrics at the chosen '
           'threshold; ROC AUC is n/a for a slice with one class only.</p>']
  for split, body in slices['splits'].items():
    overall = body['overall']
    parts.append(
        f'<h3>{_e(split)}</h3><p class="check">All {overall["rows"]:,d} raw '
        f'{_e(split)} rows scored through the export: ROC AUC '
        f'<span data-key="slices.splits.{_e(split)}.overall.roc_auc">'
        f'{_e(fmt(overall["roc_auc"], "{:.4f}"))}</span>, accuracy '
        f'<span data-key="slices.splits.{_e(split)}.overall.accuracy">'
        f'{_e(fmt(overall["accuracy"], "{:.4f}"))}</span>.</p>')
    for column, rows in body['columns'].items():
      head = ''.join(f'<th>{_e(t)}</th>' for _, t, _ in _SLICE_COLUMNS)
      trs = []
      for i, row in enumerate(rows):
        prefix = f'slices.splits.{split}.columns.{column}.{i}'
        cells = ''.join(_cell(row[k], spec, f'{prefix}.{k}')
                        for k, _, spec in _SLICE_COLUMNS)
        trs.append(f'<tr><th scope="row" data-key="{_e(prefix)}.slice">'
                   f'{_e(row["slice"])}</th>{cells}</tr>')
      parts.append(
          f'<table class="slices" data-column="{_e(column)}" '
          f'data-split="{_e(split)}"><caption>{_e(split)} by {_e(column)}'
          f'</caption><thead><tr><th>{_e(column)}</th>{head}</tr></thead>'
          f'<tbody>{"".join(trs)}</tbody></table>')
  return ''.join(parts)


def _stats_link(model_dir: str, preprocess_dir: str) -> str:
  target = os.path.join(preprocess_dir, STATS_REPORT)
  if not tf.io.gfile.exists(target):
    return (f'<p class="note">No TFDV statistics report at {_e(target)}.</p>')
  if '://' in target:
    href = target
  else:
    href = os.path.relpath(os.path.abspath(target), os.path.abspath(model_dir))
  return (f'<p><a id="stats-link" href="{_e(href)}">TFDV statistics of the '
          'preprocessed splits</a> (the preprocess job\'s stats/report.html)'
          '</p>')


_STYLE = '''
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 1.5em 0.8em 0;
        display: inline-table; vertical-align: top; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { font-weight: bold; text-align: left; padding: 0.2em 0; }
thead th { background: #f4f4f4; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #8a5300; } .muted { color: #666; font-size: 0.9em; }
'''

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


def _page_header(doc: Mapping[str, Any], title: str) -> str:
  return f'''<h1>{_e(title)}</h1>
<p class="muted">Created {_e(doc.get("created", ""))}; model
<code>{_e(doc.get("export_dir", ""))}</code>; numbers from
<a href="metrics.json">metrics.json</a>.
<span id="image-status">images not checked (scripts off?)</span></p>'''


def _page(title: str, body: str) -> str:
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<title>{_e(title)}</title><style>{_STYLE}</style></head>'
          f'<body>{body}<script>{_IMAGE_CHECK_SCRIPT}</script></body>'
          '</html>\n')


def render(doc: Mapping[str, Any], model_dir: str,
           classes: Sequence[str]) -> str:
  splits = evaluate.splits_in_order(
      s for s in ('eval', 'test') if s in doc)
  sel = doc.get('threshold_selection') or {}
  target = (f' (target {sel["target"]})' if sel.get('target') is not None
            else '')
  reached = '' if sel.get('reached', True) else (
      ' <strong>The target was not reached on eval; the threshold with the '
      'best precision was used.</strong>')
  hp = doc.get('hparams', {})
  training = doc.get('training', {})
  title = f'{doc.get("dataset", "model")}: evaluation report'
  img = lambda key, alt: (f'<img src="{IMAGES[key]}" alt="{_e(alt)}" '
                          f'data-plot="{key}">')
  imbalance = []
  if hp.get('class_weight', 'none') != 'none':
    imbalance.append(f'class weights {training.get("class_weight")}')
  if hp.get('oversample'):
    imbalance.append(f'minority class oversampled to {hp["oversample"]} of '
                     'the training stream')
  body = f'''
{_page_header(doc, title)}

<h2>Metrics</h2>
<p>Positive class <strong>{_e(doc.get("positive_class", classes[1]))}</strong>.
Decision threshold <strong data-key="threshold">{_e(fmt(doc["threshold"],
"{:.4f}"))}</strong>, chosen on the <em>{_e(sel.get("split", "eval"))}</em>
split by <code>{_e(sel.get("objective", "fixed"))}</code>{_e(target)};
the test split played no part in training, early stopping or the
threshold.{reached}</p>
{_metrics_table(doc, splits)}
<p>The same predictions at threshold 0.5, for reference:</p>
{_metrics_table(doc, splits, "at_threshold_0.5", "at_threshold_0.5.")}
<p class="muted">Model: {_e(hp.get("model_type", ""))}, hidden units
{_e(hp.get("hidden_units", ""))}; {_e(training.get("epochs_run", ""))}
epochs in {_e(training.get("seconds", ""))} s (best epoch
{_e(training.get("best_epoch", ""))}, weights restored from it);
{_e("; ".join(imbalance) or "no class weights or oversampling")}.</p>

<h2>Confusion matrix</h2>
{_confusion_tables(doc, splits, classes)}
<div>{img("confusion", "confusion matrices")}</div>

<h2>ROC and precision-recall curves</h2>
{img("roc", "ROC curves")} {img("pr", "precision-recall curves")}

<h2>Learning curves</h2>
<p>Per epoch, on train (as trained: dropout, class weights and oversampling
apply) and on eval.</p>
{img("learning", "loss and AUC per epoch")}

<h2>Calibration</h2>
<p>Observed positive rate against mean prediction in ten equal-width bins;
on the diagonal the probabilities mean what they say.</p>
{img("calibration", "calibration plot")}

<h2>Per-slice metrics</h2>
{_slices_html(doc.get("slices"))}

<h2>Data</h2>
{_stats_link(model_dir, doc.get("preprocess_dir", ""))}
'''
  return _page(title, body)


def write_report(model_dir: str, doc: Mapping[str, Any],
                 predictions: Mapping[str, Tuple[np.ndarray, np.ndarray]],
                 classes: Optional[Sequence[str]] = None) -> str:
  """Writes MDIR/report.html and its PNGs; returns the page's path.

  `doc` is the metrics document (as written to metrics.json), `predictions`
  split -> (labels, probabilities) for the splits in it. `classes` are the
  negative and positive class names (default: from the document).
  """
  splits = evaluate.splits_in_order(s for s in predictions if s in doc)
  predictions = {s: predictions[s] for s in splits}
  if classes is None:
    positive = doc.get('positive_class', '1')
    classes = ('not ' + positive, positive)
  training = doc.get('training', {})
  _plot_roc(predictions, doc, os.path.join(model_dir, IMAGES['roc']))
  _plot_pr(predictions, doc, os.path.join(model_dir, IMAGES['pr']))
  _plot_confusion(doc, splits, classes,
                  os.path.join(model_dir, IMAGES['confusion']))
  _plot_learning(training.get('history', {}), training.get('best_epoch'),
                 os.path.join(model_dir, IMAGES['learning']))
  _plot_calibration(predictions, os.path.join(model_dir,
                                              IMAGES['calibration']))
  path = os.path.join(model_dir, REPORT_FILE)
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(render(doc, model_dir, classes))
  return path


# ------------------------------------------- multiclass and regression pages

TASK_IMAGES = {
    'confusion': 'confusion_matrix.png',
    'learning': 'learning_curves.png',
    'scatter': 'predicted_vs_actual.png',
    'residuals': 'residuals.png',
}
_MONITOR_TITLES = {'cross_entropy': 'cross entropy (streaming)',
                   'rmse': 'RMSE (streaming, fitted scale)'}
_PER_CLASS_COLUMNS = [('support', 'rows', '{:,d}'),
                      ('precision', 'precision', '{:.4f}'),
                      ('recall', 'recall', '{:.4f}'), ('f1', 'F1', '{:.4f}'),
                      ('roc_auc', 'ROC AUC (one vs rest)', '{:.4f}')]
_SCATTER_POINTS = 5000


def _per_class_tables(doc, splits) -> str:
  out = []
  for s in splits:
    head = ''.join(f'<th>{_e(t)}</th>' for _, t, _ in _PER_CLASS_COLUMNS)
    trs = []
    for name, m in doc[s]['per_class'].items():
      cells = ''.join(_cell(m[k], spec, f'{s}.per_class.{name}.{k}')
                      for k, _, spec in _PER_CLASS_COLUMNS)
      trs.append(f'<tr><th scope="row">{_e(name)}</th>{cells}</tr>')
    out.append(f'<table class="per-class"><caption>{_e(s)}</caption><thead>'
               f'<tr><th>class</th>{head}</tr></thead><tbody>{"".join(trs)}'
               '</tbody></table>')
  return ''.join(out)


def _plot_class_confusion(doc, splits, path):
  """K x K counts per split, each row shaded by its share of the true
  class (so rare classes stay readable)."""
  k = len(doc[splits[0]]['classes'])
  size = max(4.2, 0.55 * k + 2)
  fig, axes = _subplots(1, len(splits), figsize=(size * len(splits), size),
                        squeeze=False)
  for ax, split in zip(axes[0], splits):
    classes = doc[split]['classes']
    grid = np.array(doc[split]['confusion_matrix'], dtype=np.int64)
    share = grid / np.maximum(grid.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap='Blues', vmin=0, vmax=1)
    if k <= 20:
      for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f'{v:,d}', ha='center', va='center', fontsize=9,
                color='white' if share[i, j] > 0.5 else 'black')
    ax.set_xticks(range(k), labels=classes, rotation=45, ha='right')
    ax.set_yticks(range(k), labels=classes)
    ax.set(xlabel='predicted', ylabel='true', title=split)
  _save(fig, path)


def _plot_predicted_vs_actual(predictions, head, path):
  fig, ax = _subplots(figsize=(5.5, 5))
  low, high = math.inf, -math.inf
  rng = np.random.default_rng(0)
  for split, (y, p) in predictions.items():
    y, p = head.to_label_units(y), head.to_label_units(p)
    if y.size > _SCATTER_POINTS:  # a fixed sample keeps the PNG light
      keep = rng.choice(y.size, _SCATTER_POINTS, replace=False)
      y, p = y[keep], p[keep]
    if y.size:
      low = min(low, float(y.min()), float(p.min()))
      high = max(high, float(y.max()), float(p.max()))
    ax.scatter(y, p, s=6, alpha=0.4, color=_SPLIT_COLORS.get(split),
               label=split)
  if math.isfinite(low):
    ax.plot([low, high], [low, high], ':', color='grey', label='y = x')
  if head.log_target:
    ax.set(xscale='symlog', yscale='symlog')
  ax.set(xlabel='actual', ylabel='predicted', title='Predicted vs actual')
  ax.legend(loc='upper left')
  _save(fig, path)


def _plot_residuals(predictions, head, path):
  fig, ax = _subplots(figsize=(5.5, 4.2))
  for split, (y, p) in predictions.items():
    err = head.to_label_units(p) - head.to_label_units(y)
    if err.size:
      ax.hist(err, bins=50, histtype='step', lw=1.5,
              color=_SPLIT_COLORS.get(split), label=split)
  ax.axvline(0, ls=':', color='grey')
  ax.set(xlabel='predicted - actual', ylabel='rows',
         title='Distribution of errors')
  ax.legend()
  _save(fig, path)


def render_task(doc: Mapping[str, Any], model_dir: str, head) -> str:
  """The page of a multiclass or regression model."""
  splits = evaluate.splits_in_order(s for s in ('eval', 'test') if s in doc)
  hp = doc.get('hparams', {})
  training = doc.get('training', {})
  title = f'{doc.get("dataset", "model")}: evaluation report'
  img = lambda key, alt: (f'<img src="{TASK_IMAGES[key]}" alt="{_e(alt)}" '
                          f'data-plot="{key}">')
  if head.task == MULTICLASS:
    about = (f'Multiclass label over {len(head.classes)} classes '
             f'({_e(", ".join(head.classes))}); the predicted class is the '
             'most probable one.')
    if hp.get('class_weight', 'none') != 'none':
      about += f' Class weights {_e(training.get("class_weight"))}.'
    task_html = f'''
<h2>Per class</h2>
{_per_class_tables(doc, splits)}

<h2>Confusion matrix</h2>
<p>Rows: true class; columns: predicted. Shading: the share of the true
class's rows.</p>
<div>{img("confusion", "confusion matrices")}</div>
'''
  else:
    about = ('Regression; metrics in the label\'s own units' +
             (' (the model fits log1p of the label; predictions are '
              'expm1 of its output)' if head.log_target else '') + '.')
    task_html = f'''
<h2>Predictions</h2>
{img("scatter", "predicted against actual")} {img("residuals", "errors")}
'''
  body = f'''
{_page_header(doc, title)}

<h2>Metrics</h2>
<p>{about} The test split played no part in training or early stopping.</p>
{_metrics_table(doc, splits, metric_rows=head.table_rows())}
<p class="muted">Model: {_e(hp.get("model_type", ""))}, hidden units
{_e(hp.get("hidden_units", ""))}; {_e(training.get("epochs_run", ""))}
epochs in {_e(training.get("seconds", ""))} s (best epoch
{_e(training.get("best_epoch", ""))} by {_e(training.get("monitor", ""))},
weights restored from it).</p>
{task_html}
<h2>Learning curves</h2>
<p>Per epoch, on train (as trained) and on eval.</p>
{img("learning", "loss per epoch")}

<h2>Data</h2>
{_stats_link(model_dir, doc.get("preprocess_dir", ""))}
'''
  return _page(title, body)


def write_task_report(model_dir: str, doc: Mapping[str, Any],
                      predictions: Mapping[str, Tuple[np.ndarray, np.ndarray]],
                      head) -> str:
  """MDIR/report.html for a multiclass or regression model: the head's
  metrics per split, per-class metrics and a K x K confusion matrix
  (multiclass) or predicted-vs-actual and error plots (regression), and the
  learning curves. `predictions`: split -> (labels, model outputs)."""
  splits = evaluate.splits_in_order(s for s in predictions if s in doc)
  predictions = {s: predictions[s] for s in splits}
  training = doc.get('training', {})
  metric = head.monitor[len('val_'):]
  _plot_learning(training.get('history', {}), training.get('best_epoch'),
                 os.path.join(model_dir, TASK_IMAGES['learning']), metric,
                 _MONITOR_TITLES.get(metric, metric))
  if head.task == MULTICLASS:
    _plot_class_confusion(doc, splits,
                          os.path.join(model_dir, TASK_IMAGES['confusion']))
  else:
    _plot_predicted_vs_actual(predictions, head,
                              os.path.join(model_dir, TASK_IMAGES['scatter']))
    _plot_residuals(predictions, head,
                    os.path.join(model_dir, TASK_IMAGES['residuals']))
  path = os.path.join(model_dir, REPORT_FILE)
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(render_task(doc, model_dir, head))
  return path
