"""How a push decision reads: the console table and the report's section.

The decision document (trainer/blessing.py) holds every figure; this module
only lays it out, once as fixed-width text for the console and once as a
section of the candidate's MDIR/report.html, candidate against the served
model overall and per slice, then the sanity checks and the decision.
"""

import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

import tensorflow as tf

from core import html

SECTION_ID = 'push-decision'
_SECTION_RE = re.compile(r'<section id="' + SECTION_ID + r'">.*?</section>\n?',
                         re.DOTALL)


def _num(value: Any, spec: str = '{:.4f}') -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return 'n/a'
  return spec.format(value)


def _result(checks: Sequence[Mapping[str, Any]]) -> str:
  if not checks:
    return ''
  return 'ok' if all(c['passed'] for c in checks) else 'FAILED'


def _rules(checks: Sequence[Mapping[str, Any]]) -> str:
  return '; '.join(c['rule'] for c in checks)


def overall_rows(doc: Mapping[str, Any]) -> List[List[str]]:
  """[metric, candidate, served, change, rules, result] per metric."""
  cand = doc['candidate']['metrics']
  base = (doc.get('baseline') or {}).get('metrics', {})
  out = [['metric', 'candidate', 'served', 'change', 'rules', 'result']]
  for key, title, spec in doc['table_rows']:
    checks = [
        c for c in doc['checks']
        if c['check'] in ('metric', 'change') and c['name'] == key
    ]
    value, old = cand.get(key), base.get(key)
    change = (value - old if value is not None and old is not None else None)
    out.append([
        title,
        _num(value, spec),
        _num(old, spec) if base else '-',
        _num(change, '{:+.4f}') if base else '-',
        _rules(checks),
        _result(checks)
    ])
  return out


def slice_rows(doc: Mapping[str, Any]) -> List[List[str]]:
  """[slice, rows, metric, candidate, served, change, result] per slice and
  metric of the slice rules."""
  out = [['slice', 'rows', 'metric', 'candidate', 'served', 'change', 'result']]
  checks = {c['name']: c for c in doc['checks'] if c['check'] == 'slice'}
  for column, entries in doc['slices']['rows'].items():
    for entry in entries:
      for metric, value in entry['candidate'].items():
        old = entry.get('baseline', {}).get(metric)
        name = f'{column}={entry["slice"]}'
        check = checks.get(f'{name} {metric}')
        result = ('ok' if check['passed'] else 'FAILED') if check else (
            'too few rows'
            if 'baseline' in entry and not entry['gated'] else '-')
        change = (
            value - old if value is not None and old is not None and
            math.isfinite(value) and math.isfinite(old) else None)
        out.append([
            name, f'{entry["rows"]:,d}', metric,
            _num(value),
            _num(old) if 'baseline' in entry else '-',
            _num(change, '{:+.4f}') if 'baseline' in entry else '-', result
        ])
  return out


def sanity_rows(doc: Mapping[str, Any]) -> List[List[str]]:
  out = [['check', 'result', 'detail']]
  for c in doc['checks']:
    if c['check'] == 'sanity':
      out.append([c['name'], 'ok' if c['passed'] else 'FAILED', c['detail']])
  return out


def _text_table(rows: Sequence[Sequence[str]]) -> str:
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = []
  for r in rows:
    cells = [
        v.ljust(w) if i == 0 or not _numeric(v) else v.rjust(w)
        for i, (v, w) in enumerate(zip(r, widths, strict=True))
    ]
    lines.append('  '.join(cells).rstrip())
  return '\n'.join(lines)


def _numeric(text: str) -> bool:
  return bool(re.fullmatch(r'[+-]?[0-9][0-9,]*(\.[0-9]+)?|n/a|-', text))


def _models_line(doc: Mapping[str, Any]) -> str:
  base = doc.get('baseline')
  served = (f'served version {base["version"]} ({base["path"]})'
            if base else 'no served model')
  return (f'candidate {doc["candidate"]["path"]} against {served}, on '
          f'{doc["data"]["rows"]:,d} labelled rows of {doc["data"]["source"]}' +
          _skipped(doc))


def _skipped(doc: Mapping[str, Any]) -> str:
  skipped = doc['data'].get('skipped') or {}
  if not skipped:
    return ''
  return (f' ({sum(skipped.values()):,d} not scored: ' +
          ', '.join(f'{n:,d} {r}' for r, n in sorted(skipped.items())) + ')')


def format_text(doc: Mapping[str, Any]) -> str:
  """The console table: overall, per slice, sanity, then the decision."""
  parts = [_models_line(doc), '', _text_table(overall_rows(doc))]
  rows = slice_rows(doc)
  if len(rows) > 1:
    parts += [
        '', f'per slice (rules apply to slices of at least '
        f'{doc["slices"]["min_rows"]:,d} rows):',
        _text_table(rows)
    ]
  parts += ['', _text_table(sanity_rows(doc))]
  parts += [f'note: {n}' for n in doc['notes']]
  parts.append(f'\ndecision: {doc["decision"]}')
  parts += [f'  - {r}' for r in doc['reasons']]
  return '\n'.join(parts)


def html_section(doc: Mapping[str, Any], outcome: str) -> str:
  """The report's section: the same tables, and what was done."""
  e = html.escape
  verdict = doc['decision']
  reasons = ''.join(f'<li>{e(r)}</li>' for r in doc['reasons'])
  notes = ''.join(f'<p class="note">{e(n)}</p>' for n in doc['notes'])
  slices = slice_rows(doc)
  slice_html = (
      html.text_table(slices, table_class='push-slices')
      if len(slices) > 1 else '')
  return (f'<section id="{SECTION_ID}">\n<h2>Push decision</h2>\n'
          f'<p>Decision <strong data-key="decision">{e(verdict)}</strong> '
          f'({e(doc.get("time", ""))}): {e(outcome)}</p>\n' +
          (f'<ul class="reasons">{reasons}</ul>\n' if reasons else '') +
          f'<p class="muted">{e(_models_line(doc))}.</p>\n{notes}' +
          html.text_table(overall_rows(doc), table_class='push-metrics') +
          slice_html + html.text_table(
              sanity_rows(doc), text_cols=(2,), table_class='push-sanity') +
          '\n</section>\n')


def add_to_report(report_path: str, section: str) -> bool:
  """Puts the section into the report page, replacing an earlier decision;
  False when there is no page."""
  if not tf.io.gfile.exists(report_path):
    return False
  with tf.io.gfile.GFile(report_path) as f:
    page = f.read()
  page = _SECTION_RE.sub('', page)
  at = page.rfind('</body>')
  page = (page[:at] + section + page[at:]) if at >= 0 else page + section
  with tf.io.gfile.GFile(report_path, 'w') as f:
    f.write(page)
  return True


def outcome_text(pushed: Optional[Mapping[str, Any]], forced: bool,
                 reason: Optional[str]) -> str:
  if not pushed:
    return 'not pushed; the served version is unchanged'
  text = f'pushed as version {pushed["version"]} to {pushed["path"]}'
  if forced:
    text += f' (forced: {reason})'
  return text


def summary(doc: Mapping[str, Any]) -> Dict[str, Any]:
  """The metrics a push-log line keeps: scalars of both models."""
  return {
      'candidate': doc['candidate']['metrics'],
      'baseline': (doc.get('baseline') or {}).get('metrics')
  }
