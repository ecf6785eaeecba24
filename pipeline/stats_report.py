"""A standalone HTML report of TFDV statistics, side by side.

TFDV's own visualization (Facets) needs Jupyter and loads its web components
from the internet, so it shows nothing on a machine without network access or
in a file opened from a CI artifact. This report is one self-contained file:
plain HTML, inline CSS and SVG charts, and a few lines of inline script that
only add a feature index and a filter box (the content is complete without
them). Datasets are drawn on shared axes with one colour each, so that train
vs eval, or training vs serving, can be compared at a glance.

The output has no timestamp or other run-dependent content: the same
statistics give the same bytes, like the rest of the preprocess output.
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple, TypeAlias, TypeGuard

from tensorflow_metadata.proto.v0 import statistics_pb2

from core import html

COLORS = ('#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b')
HISTOGRAM_BINS = 20
TOP_VALUES = 12
CHART_WIDTH = 560

FeatureStats: TypeAlias = statistics_pb2.FeatureNameStatistics
Dataset = Tuple[str, statistics_pb2.DatasetFeatureStatistics]

# Adds an index of features and a filter box; the page is complete without it.
_SCRIPT = """
(function(){
  var sections = document.querySelectorAll('section.feature');
  var nav = document.getElementById('index');
  var input = document.createElement('input');
  input.id = 'filter'; input.type = 'search';
  input.placeholder = 'filter features';
  nav.appendChild(input);
  nav.appendChild(document.createElement('br'));
  var links = [];
  sections.forEach(function(s){
    var a = document.createElement('a');
    a.href = '#' + s.id; a.textContent = s.dataset.feature;
    a.className = 'index-link';
    if (s.classList.contains('anomalous')) { a.style.color = '#c62828'; }
    nav.appendChild(a); links.push([a, s]);
  });
  input.addEventListener('input', function(){
    var q = input.value.toLowerCase();
    links.forEach(function(p){
      var show = p[1].dataset.feature.toLowerCase().indexOf(q) >= 0;
      p[0].style.display = show ? '' : 'none';
      p[1].style.display = show ? '' : 'none';
    });
  });
  var charts = document.querySelectorAll('svg.chart').length;
  document.getElementById('status').textContent =
      sections.length + ' features, ' + charts + ' charts';
})();
"""

_e = html.escape


def _fmt(x: float) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return ''
  if abs(x) >= 1e6 or (abs(x) < 1e-3 and x != 0):
    return f'{x:.3g}'
  if float(x).is_integer():
    return f'{int(x):,}'
  return f'{x:,.3f}'.rstrip('0').rstrip('.')


def _pct(x: float) -> str:
  return f'{100 * x:.1f}%'


# ---------------------------------------------------------------- accessors


def _features(
    ds: statistics_pb2.DatasetFeatureStatistics) -> Dict[str, FeatureStats]:
  return {'.'.join(f.path.step) or f.name: f for f in ds.features}


def _common(f: FeatureStats) -> statistics_pb2.CommonStatistics:
  kind = f.WhichOneof('stats')
  if kind in ('num_stats', 'string_stats', 'bytes_stats'):
    return getattr(f, kind).common_stats
  return statistics_pb2.CommonStatistics()  # e.g. struct features: not drawn


def _is_numeric(f: FeatureStats) -> bool:
  return f.WhichOneof('stats') == 'num_stats'


def _present(f: Optional[FeatureStats]) -> TypeGuard[FeatureStats]:
  return f is not None and _common(f).num_non_missing > 0


def _histogram(f: FeatureStats, kind) -> Optional[statistics_pb2.Histogram]:
  for h in f.num_stats.histograms:
    if h.type == kind:
      return h
  return None


# ------------------------------------------------------------------- charts


def _chart_histogram(f: FeatureStats) -> Optional[statistics_pb2.Histogram]:
  """The quantile histogram when there is one, else the equal-width one.

  Datasets have their own bucket boundaries, so charts redraw every dataset
  on shared bins. Quantile buckets are narrow where the data is dense, which
  keeps that redrawing faithful; equal-width buckets would smear a dense
  region (or a point mass at 0) over a whole wide bucket.
  """
  return (_histogram(f, statistics_pb2.Histogram.QUANTILES) or
          _histogram(f, statistics_pb2.Histogram.STANDARD))


def _rebin(hist: statistics_pb2.Histogram, lo: float, hi: float,
           bins: int) -> List[float]:
  """A histogram's mass on `bins` equal bins over [lo, hi], as fractions.

  Mass is spread uniformly within each source bucket (TFDV's own assumption
  for its distance measures); a zero-width bucket is a point mass.
  """
  out = [0.0] * bins
  width = (hi - lo) / bins if hi > lo else 1.0
  total = sum(b.sample_count for b in hist.buckets) or 1.0
  for b in hist.buckets:
    if b.sample_count <= 0:
      continue
    a, z = b.low_value, b.high_value
    if z <= a or hi <= lo:
      i = min(bins - 1, max(0, int((a - lo) / width))) if hi > lo else 0
      out[i] += b.sample_count
      continue
    first = max(0, int((a - lo) / width))
    last = min(bins - 1, int((z - lo) / width))
    for i in range(first, last + 1):
      left, right = lo + i * width, lo + (i + 1) * width
      overlap = max(0.0, min(right, z) - max(left, a))
      out[i] += b.sample_count * overlap / (z - a)
  return [c / total for c in out]


def _numeric_chart(name: str,
                   items: Sequence[Tuple[str, Optional[FeatureStats]]]) -> str:
  present = [(n, f, _chart_histogram(f)) for n, f in items if _present(f)]
  present = [(n, f, h) for n, f, h in present if h is not None]
  if not present:
    return ''
  lo = min(f.num_stats.min for _, f, _ in present)
  hi = max(f.num_stats.max for _, f, _ in present)
  series = [(n, _rebin(h, lo, hi, HISTOGRAM_BINS)) for n, _, h in present]
  top = max(max(s) for _, s in series) or 1.0
  w, h, pad_l, pad_b = CHART_WIDTH, 170, 40, 28
  plot_w, plot_h = w - pad_l - 10, h - pad_b - 10
  group = plot_w / HISTOGRAM_BINS
  bar = max(1.0, (group - 2) / len(series))
  parts = [
      f'<svg class="chart" role="img" width="{w}" height="{h}" '
      f'viewBox="0 0 {w} {h}" aria-label="histogram of {_e(name)}">'
  ]
  parts.append(f'<line x1="{pad_l}" y1="{10 + plot_h}" x2="{w - 10}" '
               f'y2="{10 + plot_h}" stroke="#999"/>')
  names = [n for n, _ in items]
  step = (hi - lo) / HISTOGRAM_BINS if hi > lo else 0
  for si, (dname, fracs) in enumerate(series):
    color = COLORS[names.index(dname) % len(COLORS)]
    for i, frac in enumerate(fracs):
      bh = plot_h * frac / top
      x = pad_l + i * group + 1 + si * bar
      y = 10 + plot_h - bh
      left, right = lo + i * step, lo + (i + 1) * step
      parts.append(
          f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{bh:.1f}" '
          f'fill="{color}"><title>{_e(dname)}: {_pct(frac)} in '
          f'[{_fmt(left)}, {_fmt(right)})</title></rect>')
  parts.append(f'<text x="{pad_l}" y="{h - 10}">{_e(_fmt(lo))}</text>')
  parts.append(f'<text x="{w - 10}" y="{h - 10}" text-anchor="end">'
               f'{_e(_fmt(hi))}</text>')
  parts.append(f'<text x="{pad_l - 4}" y="16" text-anchor="end">'
               f'{_pct(top)}</text>')
  parts.append(f'<text x="{pad_l - 4}" y="{10 + plot_h}" text-anchor="end">'
               '0</text>')
  parts.append('</svg>')
  return ''.join(parts)


def _value_fractions(f: FeatureStats) -> Dict[str, float]:
  ss = f.string_stats
  total = ss.common_stats.tot_num_values or ss.common_stats.num_non_missing
  if not total:
    return {}
  buckets = ss.rank_histogram.buckets or [
      statistics_pb2.RankHistogram.Bucket(
          label=v.value, sample_count=v.frequency) for v in ss.top_values
  ]
  return {b.label: b.sample_count / total for b in buckets}


def _categorical_chart(
    name: str, items: Sequence[Tuple[str, Optional[FeatureStats]]]) -> str:
  present = [(n, _value_fractions(f))
             for n, f in items
             if _present(f) and f.WhichOneof('stats') == 'string_stats']
  if not present:
    return ''
  score: Dict[str, float] = {}
  for _, fr in present:
    for v, x in fr.items():
      score[v] = max(score.get(v, 0.0), x)
  values = sorted(score, key=lambda v: (-score[v], v))[:TOP_VALUES]
  top = max(score[v] for v in values) or 1.0
  row_h = 5 * len(present) + 6
  label_w, w = 150, CHART_WIDTH
  h = row_h * len(values) + 8
  names = [n for n, _ in items]
  parts = [
      f'<svg class="chart" role="img" width="{w}" height="{h}" '
      f'viewBox="0 0 {w} {h}" aria-label="top values of {_e(name)}">'
  ]
  for vi, value in enumerate(values):
    y0 = 4 + vi * row_h
    label = value if len(value) <= 24 else value[:23] + '\u2026'
    parts.append(f'<text x="{label_w - 6}" y="{y0 + row_h / 2 + 3:.1f}" '
                 f'text-anchor="end">{_e(label)}</text>')
    for si, (dname, fr) in enumerate(present):
      frac = fr.get(value, 0.0)
      bw = (w - label_w - 60) * frac / top
      color = COLORS[names.index(dname) % len(COLORS)]
      parts.append(
          f'<rect x="{label_w}" y="{y0 + si * 5:.1f}" width="{bw:.1f}" '
          f'height="4.5" fill="{color}"><title>{_e(dname)}: {_e(value)} '
          f'{_pct(frac)}</title></rect>')
    best = max(fr.get(value, 0.0) for _, fr in present)
    parts.append(f'<text x="{w - 4}" y="{y0 + row_h / 2 + 3:.1f}" '
                 f'text-anchor="end">{_pct(best)}</text>')
  parts.append('</svg>')
  return ''.join(parts)


# ------------------------------------------------------------------- tables


def _stat_rows(items: Sequence[Tuple[str, Optional[FeatureStats]]],
               numeric: bool, num_examples: Sequence[int]) -> List[List[str]]:
  rows = []
  header = ['statistic'] + [n for n, _ in items]

  def row(label, fn):
    cells = [label]
    for (_, f), n in zip(items, num_examples):
      cells.append('absent' if f is None else fn(f, n))
    rows.append(cells)

  row('present', lambda f, n: _fmt(_common(f).num_non_missing))
  row('missing', lambda f, n: _pct(_common(f).num_missing / n) if n else '')
  if numeric:

    def ns(f):
      return f.num_stats

    row('mean', lambda f, n: _fmt(ns(f).mean) if _present(f) else '')
    row('std dev', lambda f, n: _fmt(ns(f).std_dev) if _present(f) else '')
    row(
        'zeros',
        lambda f, n: _pct(ns(f).num_zeros / max(1,
                                                _common(f).num_non_missing))
        if _present(f) else '')
    row('min', lambda f, n: _fmt(ns(f).min) if _present(f) else '')
    row('median', lambda f, n: _fmt(ns(f).median) if _present(f) else '')
    row('max', lambda f, n: _fmt(ns(f).max) if _present(f) else '')
  else:

    def ss(f):
      return f.string_stats

    row('unique', lambda f, n: _fmt(ss(f).unique) if _present(f) else '')
    row(
        'top value', lambda f, n: ss(f).top_values[0].value
        if _present(f) and ss(f).top_values else '')
    row('avg length', lambda f, n: _fmt(ss(f).avg_length)
        if _present(f) else '')
  return [header] + rows


def _html_table(rows: Sequence[Sequence[str]],
                classes: Sequence[str] = (),
                text_cols: Sequence[int] = (),
                table_class: str = '') -> str:
  out = [
      f'<table class="{table_class}"><thead><tr>'
      if table_class else '<table><thead><tr>'
  ]
  out.extend(f'<th>{_e(c)}</th>' for c in rows[0])
  out.append('</tr></thead><tbody>')
  for i, r in enumerate(rows[1:]):
    cls = classes[i] if i < len(classes) and classes[i] else ''
    out.append(f'<tr class="{cls}">' if cls else '<tr>')
    for j, c in enumerate(r):
      attr = ' class="text"' if j in text_cols else ''
      out.append(f'<td{attr}>{_e(c)}</td>')
    out.append('</tr>')
  out.append('</tbody></table>')
  return ''.join(out)


def _legend(names: Sequence[str]) -> str:
  return '<div class="legend">' + ''.join(
      f'<span><i style="background:{COLORS[i % len(COLORS)]}"></i>{_e(n)}'
      '</span>' for i, n in enumerate(names)) + '</div>'


def _decision_table(items: Sequence) -> str:
  """Per feature: rows on each side, distance, threshold, p-value, verdict.

  `items` are drift.Decision objects (duck-typed: this module draws, it does
  not decide).
  """
  base, other = items[0].baseline, items[0].compared
  head = [
      'feature', 'comparator', f'{base} rows', f'{other} rows', 'distance',
      'threshold', 'p-value', 'needed below', 'verdict', 'counted'
  ]
  verdicts = {
      'ok': 'ok',
      'small': 'ok (small)',
      'chance': 'ok (chance)',
      'anomaly': 'ANOMALY'
  }

  def p(x):
    return '' if x is None else (f'{x:.2g}' if x >= 1e-4 else f'{x:.0e}')

  rows = [head] + [[
      d.feature, d.check,
      _fmt(d.baseline_rows),
      _fmt(d.compared_rows), f'{d.distance:.4f}', f'{d.threshold:.4f}',
      p(d.p_value), '' if d.level is None else f'{d.level:.2g}',
      verdicts.get(d.verdict, d.verdict), d.detail
  ] for d in items]
  return (_html_table(
      rows,
      classes=[
          'flagged' if d.flagged else 'warned' if d.verdict == 'chance' else ''
          for d in items
      ],
      text_cols=[9]) +
          '<p><small>ok (chance): over the threshold, but no more than chance '
          'gives at these sample sizes; ok (small): a real difference, '
          'smaller than the threshold; p-values are Holm-corrected over the '
          'run.</small></p>')


def _side_by_side(d, datasets: Sequence[Dataset]) -> str:
  """A flagged feature's two distributions, baseline and compared, alone."""
  by_name = {n: _features(ds) for n, ds in datasets}
  names = [n for n in (d.baseline, d.compared) if n in by_name]
  counts = {n: ds.num_examples for n, ds in datasets}
  items = [(n, by_name[n].get(d.feature)) for n in names]
  known = [f for _, f in items if f is not None]
  if not known:
    return ''
  numeric = any(_is_numeric(f) for f in known)
  chart = (
      _numeric_chart(d.feature, items) if numeric else _categorical_chart(
          d.feature, items))
  return (f'<section class="feature anomalous"><h2>{_e(d.feature)} <small>'
          f'{_e(d.check)}: {_e(" vs ".join(reversed(names)))}</small></h2>'
          f'{_legend(names)}<div class="row">' + _html_table(
              _stat_rows(items, numeric, [counts[n] for n in names]),
              table_class='stats') + (chart or '<p>No values to chart.</p>') +
          '</div></section>')


# ------------------------------------------------------------------- report


def render(title: str,
           datasets: Sequence[Dataset],
           anomalies=(),
           measurements: Optional[Dict[str, Sequence]] = None,
           notes: Sequence[str] = (),
           feature_warnings: Optional[Sequence] = None) -> str:
  """The whole report as one HTML string.

  `datasets`: (name, DatasetFeatureStatistics) in display order, the baseline
  first. `anomalies`: validation.AnomalyRow-like objects (feature, anomaly,
  description, dataset). `measurements`: {heading: [validation.Measurement]}.
  `feature_warnings`: column_checks.Finding objects (column, reason, detail)
  from preprocess's feature checks; None leaves that section out.
  """
  names = [n for n, _ in datasets]
  by_name = [_features(ds) for _, ds in datasets]
  num_examples = [ds.num_examples for _, ds in datasets]
  order = []
  for feats in by_name:
    for f in feats:
      if f not in order:
        order.append(f)
  flagged = {a.feature for a in anomalies}
  warned = {w.column for w in feature_warnings or ()}
  for items in (measurements or {}).values():
    flagged.update(m.feature for m in items if m.flagged)

  body = [f'<header><h1>{_e(title)}</h1>']
  body.extend(f'<p>{_e(n)}</p>' for n in notes)
  body.append('<p id="status"></p></header><main>')
  body.append('<nav id="index"></nav>')

  body.append('<h2>Datasets</h2>')
  body.append(
      _html_table([['dataset', 'examples', 'features']] +
                  [[n, _fmt(ds.num_examples),
                    str(len(ds.features))] for n, ds in datasets]))

  body.append(f'<h2>Anomalies <small class="{"bad" if anomalies else "ok"}">'
              f'{len(anomalies)}</small></h2>')
  if anomalies:
    with_ds = any(getattr(a, 'dataset', '') for a in anomalies)
    head = (['dataset']
            if with_ds else []) + ['feature', 'anomaly', 'description']
    rows = [head] + [([a.dataset] if with_ds else []) +
                     [a.feature, a.anomaly, a.description] for a in anomalies]
    body.append(
        _html_table(
            rows,
            classes=['flagged'] * len(anomalies),
            text_cols=[len(head) - 1]))
  else:
    body.append('<p class="ok">None: the data meets the schema.</p>')

  if feature_warnings is not None:
    body.append('<h2>Feature checks <small class="'
                f'{"bad" if feature_warnings else "ok"}">'
                f'{len(feature_warnings)}</small></h2>')
    if feature_warnings:
      rows = [['feature', 'check', 'warning']
             ] + [[w.column, w.reason, w.detail] for w in feature_warnings]
      body.append(
          _html_table(
              rows, classes=['warned'] * len(feature_warnings), text_cols=[2]))
    else:
      body.append('<p class="ok">None: no feature is empty, constant, an '
                  'identifier, an integer code scaled as a quantity, or a '
                  'likely leak.</p>')

  for heading, items in (measurements or {}).items():
    body.append(f'<h2>{_e(heading)}</h2>')
    if not items:
      body.append('<p>No comparator configured.</p>')
      continue
    if hasattr(items[0], 'verdict'):  # drift.Decision: sized to the sample
      body.append(_decision_table(items))
      body.extend(_side_by_side(d, datasets) for d in items if d.flagged)
      continue
    rows = [['feature', 'comparator', 'distance', 'threshold', 'status']] + [[
        m.feature, m.comparator, f'{m.value:.4f}', f'{m.threshold:.4f}',
        'over threshold' if m.flagged else 'ok'
    ] for m in items]
    body.append(
        _html_table(
            rows, classes=['flagged' if m.flagged else '' for m in items]))

  body.append('<h2>Features</h2>')
  body.append(_legend(names))
  for fname in order:
    items = [(n, feats.get(fname)) for n, feats in zip(names, by_name)]
    known = [f for _, f in items if f is not None]
    numeric = any(_is_numeric(f) for f in known)
    kind = 'numeric' if numeric else 'categorical'
    cls = ('feature anomalous' if fname in flagged else
           'feature warned' if fname in warned else 'feature')
    body.append(f'<section class="{cls}" id="f-{_e(fname)}" '
                f'data-feature="{_e(fname)}"><h2>{_e(fname)} '
                f'<small>{kind}</small></h2><div class="row">')
    body.append(
        _html_table(
            _stat_rows(items, numeric, num_examples), table_class='stats'))
    chart = (
        _numeric_chart(fname, items) if numeric else _categorical_chart(
            fname, items))
    body.append(chart or '<p>No values to chart.</p>')
    body.append('</div></section>')
  body.append('</main>')
  return html.page(
      title, '\n'.join(body), html.STATS_STYLE, _SCRIPT, viewport=True)
