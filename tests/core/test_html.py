"""core/html.py: the pieces the standalone report pages are built from."""

from core import html


def test_values_are_escaped_in_text_and_attributes():
  assert html.escape('<a href="x">&\'') == (
      '&lt;a href=&quot;x&quot;&gt;&amp;&#x27;')
  assert html.cell(
      '1 < 2', 'th', scope='row',
      data_key='a"b') == ('<th scope="row" data-key="a&quot;b">1 &lt; 2</th>')
  # Attributes keep their order; None leaves one out; class_ is class.
  assert html.attributes(
      class_='num', title=None,
      data_split='eval') == (' class="num" data-split="eval"')
  assert html.row([html.cell(1)], class_='') == '<tr><td>1</td></tr>'
  assert html.row([], class_='flagged') == '<tr class="flagged"></tr>'


def test_tables_with_and_without_a_header():
  head = [html.cell('metric', 'th'), html.cell('eval', 'th')]
  rows = [html.row([html.cell('rows', 'th'), html.cell('10')])]
  assert html.table(
      head, rows, caption='a & b', class_='metrics') == (
          '<table class="metrics"><caption>a &amp; b</caption><thead><tr>'
          '<th>metric</th><th>eval</th></tr></thead><tbody><tr><th>rows</th>'
          '<td>10</td></tr></tbody></table>')
  # A labelled grid: rows straight in the table.
  assert html.table(
      None, rows) == ('<table><tr><th>rows</th><td>10</td></tr></table>')


def test_text_table_marks_row_classes_and_text_columns():
  page = html.text_table([['feature', 'why'], ['a', 'x<y'], ['b', 'ok']],
                         classes=['flagged'],
                         text_cols=[1],
                         table_class='stats')
  assert page == (
      '<table class="stats"><thead><tr><th>feature</th><th>why</th></tr>'
      '</thead><tbody><tr class="flagged"><td>a</td><td class="text">x&lt;y'
      '</td></tr><tr><td>b</td><td class="text">ok</td></tr></tbody>'
      '</table>')


def test_page_is_one_self_contained_document():
  doc = html.page('a & b', '<p>hi</p>', html.MODEL_REPORT_STYLE, 'var x;')
  assert doc.startswith('<!DOCTYPE html>\n<html lang="en"><head>'
                        '<meta charset="utf-8"><title>a &amp; b</title>')
  assert f'<style>{html.MODEL_REPORT_STYLE}</style>' in doc
  assert doc.endswith('<body><p>hi</p><script>var x;</script></body>'
                      '</html>\n')
  assert 'viewport' not in doc
  bare = html.page('t', '', html.STATS_STYLE, viewport=True)
  assert '<meta name="viewport" content="width=device-width">' in bare
  assert '<script>' not in bare
