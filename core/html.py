"""Building blocks of the project's standalone HTML pages.

The TFDV statistics report (stats/report.html) and the model's evaluation
report (MDIR/report.html) are single files a person opens from disk or from a
CI artifact: no network, no template engine, every value escaped. They are
built from the same few pieces, kept here so both pages escape, lay out and
style their tables alike:

  escape      any value as HTML text (quotes too, so it is safe in attributes)
  cell, row   one <td>/<th> and one <tr>, attributes in the order given
  table       a table of rendered rows, with an optional caption and header
  text_table  a whole table from rows of plain text, the first row the header
  page        the document around a body, its style sheet and script

and the pages' style sheets (STATS_STYLE, MODEL_REPORT_STYLE). Pure string
functions: the same input gives the same bytes.
"""

import html
from typing import Any, Optional, Sequence


def escape(value: Any) -> str:
  """`value` as HTML text; quotes are escaped too, for attribute values."""
  return html.escape(str(value), quote=True)


def attributes(**attrs: Any) -> str:
  """' name="value"' for each attribute that is not None, in order.

  Keyword names are Python names: a trailing underscore is dropped (class_)
  and underscores become hyphens (data_key -> data-key).
  """
  return ''.join(f' {name.rstrip("_").replace("_", "-")}="{escape(value)}"'
                 for name, value in attrs.items()
                 if value is not None)


def cell(value: Any, tag: str = 'td', **attrs: Any) -> str:
  """One table cell holding `value` as text."""
  return f'<{tag}{attributes(**attrs)}>{escape(value)}</{tag}>'


def row(cells: Sequence[str], class_: Optional[str] = None) -> str:
  """One table row of rendered cells; no class attribute when empty."""
  return f'<tr{attributes(class_=class_ or None)}>{"".join(cells)}</tr>'


def table(header: Optional[Sequence[str]],
          rows: Sequence[str],
          caption: Optional[str] = None,
          **attrs: Any) -> str:
  """A table of rendered rows: the header cells in <thead>, the rows in
  <tbody>; without a header the rows stand directly in the table (a grid
  whose first row and column are labels, like a confusion matrix)."""
  parts = [f'<table{attributes(**attrs)}>']
  if caption is not None:
    parts.append(f'<caption>{escape(caption)}</caption>')
  if header is None:
    parts.extend(rows)
  else:
    parts.append(f'<thead>{row(header)}</thead><tbody>{"".join(rows)}'
                 '</tbody>')
  parts.append('</table>')
  return ''.join(parts)


def text_table(rows: Sequence[Sequence[Any]],
               classes: Sequence[str] = (),
               text_cols: Sequence[int] = (),
               table_class: str = '') -> str:
  """A table of plain values: rows[0] is the header, each further row gets
  the class at its index in `classes` (none when empty), and the columns in
  `text_cols` are marked class="text" (wrapped prose, not figures)."""
  body = []
  for i, values in enumerate(rows[1:]):
    body.append(
        row([
            cell(v, class_='text' if j in text_cols else None)
            for j, v in enumerate(values)
        ], classes[i] if i < len(classes) else None))
  return table([cell(v, 'th') for v in rows[0]],
               body,
               class_=table_class or None)


def page(title: str,
         body: str,
         style: str,
         script: str = '',
         viewport: bool = False) -> str:
  """The whole document: UTF-8, the title, the inline style sheet, the body
  and, when given, an inline script run at the end of the body."""
  meta = ('<meta name="viewport" content="width=device-width">'
          if viewport else '')
  script_html = f'<script>{script}</script>' if script else ''
  return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'{meta}<title>{escape(title)}</title><style>{style}</style>'
          f'</head><body>{body}{script_html}</body></html>\n')


# The TFDV statistics report: a dark header, one card per feature, compact
# right-aligned statistics.
STATS_STYLE = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;
  color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;font-size:13px;color:#cfd8dc}
main{padding:16px 24px;max-width:1200px}
nav#index{margin:8px 0 16px;font-size:13px}
nav#index a{margin-right:10px;white-space:nowrap}
#filter{padding:4px 8px;font-size:13px;width:240px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
table.stats td{text-align:right}
table.stats td:first-child{text-align:left}
td.text{max-width:640px}
tr.flagged td{background:#ffebee}
section.feature{background:#fff;border:1px solid #e0e0e0;border-radius:4px;
  margin:12px 0;padding:8px 16px}
section.feature h2{font-size:16px;margin:6px 0}
section.feature h2 small{color:#777;font-weight:normal}
section.feature.anomalous{border-left:4px solid #c62828}
section.feature.warned{border-left:4px solid #ef6c00}
tr.warned td{background:#fff3e0}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
.ok{color:#2e7d32}.bad{color:#c62828;font-weight:bold}
svg text{font-size:10px;fill:#555}
"""

# The model's evaluation report: a readable column of prose, tables side by
# side, figures right-aligned in tabular digits.
MODEL_REPORT_STYLE = '''
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
