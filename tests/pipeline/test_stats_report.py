"""The standalone HTML statistics report, as a file and in a real browser.

The browser tests render each report in headless Chromium (tests/browser.py).
"""

import os
import re

from tensorflow_metadata.proto.v0 import statistics_pb2

from pipeline import skew
from pipeline import stats_report
from pipeline import validation
from tests.browser import dump_dom

FEATURES = [
    'age', 'workclass', 'fnlwgt', 'education', 'education_num',
    'marital_status', 'occupation', 'relationship', 'race', 'sex',
    'capital_gain', 'capital_loss', 'hours_per_week', 'native_country',
    'income_bracket'
]


def _index_links(dom):
  return re.findall(r'<a href="#f-([^"]+)" class="index-link"[^>]*>([^<]+)</a>',
                    dom)


def _report(out):
  path = os.path.join(out, 'stats', 'report.html')
  with open(path, encoding='utf-8') as f:
    return path, f.read()


def test_preprocess_report_is_self_contained(adult_preprocessed):
  out, _ = adult_preprocessed
  _, page = _report(out)
  assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page)
  assert 'http://' not in page and 'https://' not in page
  for name in FEATURES:
    assert f'data-feature="{name}"' in page
  assert page.count('<svg class="chart"') == 15
  for split in ('train', 'eval', 'test'):
    assert f'</i>{split}</span>' in page  # legend
  # Deterministic, like the rest of the output: same statistics, same bytes.
  stats = [
      (n,
       validation.dataset(
           validation.load_statistics(os.path.join(out, 'stats', f'{n}.pb'))))
      for n in ('train', 'eval')
  ]
  assert stats_report.render('t', stats) == stats_report.render('t', stats)


def test_render_escapes_names_and_values():
  ds = statistics_pb2.DatasetFeatureStatistics(num_examples=3)
  f = ds.features.add()
  f.path.step.append('<b>name</b>')
  f.type = statistics_pb2.FeatureNameStatistics.STRING
  f.string_stats.common_stats.num_non_missing = 3
  f.string_stats.common_stats.tot_num_values = 3
  f.string_stats.unique = 1
  f.string_stats.top_values.add(value='<script>alert(1)</script>', frequency=3)
  page = stats_report.render('a & b', [('serving', ds)])
  assert '<script>alert(1)' not in page and '<b>name</b>' not in page
  assert '&lt;script&gt;alert(1)&lt;/script&gt;' in page
  assert 'data-feature="&lt;b&gt;name&lt;/b&gt;"' in page
  assert '<title>a &amp; b</title>' in page


def test_preprocess_report_renders_in_chromium(adult_preprocessed, tmp_path):
  out, _ = adult_preprocessed
  path, _ = _report(out)
  dom = dump_dom(path, tmp_path)
  # Built by the page's script in the browser, one link per feature section.
  links = _index_links(dom)
  assert [text for _, text in links] == FEATURES
  assert '15 features, 15 charts' in dom
  assert dom.count('<rect ') > 500
  assert 'id="filter"' in dom


def test_skew_report_renders_in_chromium(adult_preprocessed, adult_dir,
                                         tmp_path):
  out, _ = adult_preprocessed
  report_dir = tmp_path / 'skew'
  assert skew.main([
      '--preprocess-dir', out, '--serving-data',
      os.path.join(adult_dir, 'adult.test'), '--report-dir',
      str(report_dir)
  ]) == 0
  dom = dump_dom(str(report_dir / skew.SKEW_HTML), tmp_path)
  assert [text for _, text in _index_links(dom)] == FEATURES
  assert '15 features, 15 charts' in dom
  assert '</i>training</span>' in dom and '</i>serving</span>' in dom
  assert 'Skew: serving vs training' in dom
