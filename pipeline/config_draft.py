"""Drafts a dataset config from a CSV sample: the start of a new dataset.

`python -m pipeline.schema init` calls this. It reads a sample of the file,
works out the dialect (delimiter, header, missing-value tokens), each
column's type (int, float, bool, timestamp, list, text or string), a
transform for each feature (log1p for skewed non-negative numbers, quantile
buckets for many-valued ones, a vocabulary for low-cardinality strings and
hashing for high-cardinality ones) and the task from the label column
(binary, multiclass or regression). The result is a YAML a person edits, not
a finished config: every choice is written out explicitly so it can be read
and changed, and the draft is parsed with the real config loader before it
is written, so it always loads.
"""

import collections
import csv
import io
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml
from apache_beam.io.filesystems import FileSystems

from pipeline import values as raw_values
from pipeline.config import (BINARY, MULTICLASS, REGRESSION, TASKS,
                             DatasetConfig, parse_config)
from pipeline.errors import InputError, UserError

DEFAULT_SAMPLE_ROWS = 100_000
MISSING_TOKENS = ('', '?', 'NA', 'N/A', 'n/a', 'NaN', 'nan', 'null', 'NULL',
                  'None', '-')
LIST_SEPARATORS = ('|', ';')
# A string column with at most this many distinct values gets a vocabulary;
# more, and it is hashed.
MAX_VOCABULARY = 1000
# A string label with at most this many classes is a classification task.
MAX_CLASSES = 50
# A numeric column with more distinct values than this gets quantile buckets
# (and a numeric label with more is a regression target).
MIN_DISTINCT_FOR_BUCKETS = 20
DEFAULT_BUCKETS = 10
# Free text: values with this many words on average.
TEXT_MIN_MEAN_WORDS = 4.0
SKEWNESS_FOR_LOG = 2.0


def _read_sample(path: str, max_rows: int, encoding: str
                ) -> Tuple[str, List[str]]:
  """The first `max_rows` + 1 lines of the file, as text."""
  lines = []
  try:
    with FileSystems.open(path) as f:
      for raw in f:
        lines.append(raw.decode(encoding).rstrip('\r\n'))
        if len(lines) > max_rows:
          break
  except UnicodeDecodeError as e:
    raise InputError(f'--input {path}: not valid {encoding} at byte {e.start} '
                     'of a sampled line; pass --encoding') from None
  except Exception as e:  # pylint: disable=broad-except
    raise InputError(f'--input {path}: cannot read: {e}') from None
  lines = [l for l in lines if l.strip()]
  if not lines:
    raise InputError(f'--input {path}: no data lines')
  return '\n'.join(lines[:50]), lines


def _dialect(head: str, delimiter: Optional[str]) -> csv.Dialect:
  if delimiter:
    class Given(csv.excel):  # pylint: disable=missing-class-docstring
      pass
    Given.delimiter = delimiter
    return Given
  try:
    return csv.Sniffer().sniff(head, delimiters=',;\t|')
  except csv.Error:
    return csv.excel


def _is_number(text: str) -> bool:
  try:
    return math.isfinite(float(text))
  except ValueError:
    return False


def _is_int(text: str) -> bool:
  try:
    int(text)
    return True
  except ValueError:
    return False


def _is_bool(text: str) -> bool:
  # All-0/1 columns were already taken as int (types are tried in order).
  try:
    raw_values.parse_bool(text)
    return True
  except ValueError:
    return False


def _is_timestamp(text: str) -> bool:
  # Numbers are numbers, not epoch timestamps: that needs a person's word.
  if _is_number(text) or '-' not in text:
    return False
  try:
    raw_values.parse_timestamp(text)
    return True
  except ValueError:
    return False


def _skewness(numbers: Sequence[float]) -> float:
  n = len(numbers)
  if n < 3:
    return 0.0
  mean = sum(numbers) / n
  var = sum((x - mean) ** 2 for x in numbers) / n
  if var <= 0:
    return 0.0
  return sum((x - mean) ** 3 for x in numbers) / n / var ** 1.5


class _Column:
  """What the sample says about one column."""

  def __init__(self, name: str, values: List[str], missing: frozenset):
    self.name = name
    self.present = [v for v in values if v not in missing]
    self.missing = len(values) - len(self.present)
    self.distinct = collections.Counter(self.present)

  def all(self, test) -> bool:
    return bool(self.present) and all(test(v) for v in self.distinct)

  def list_separator(self) -> Optional[str]:
    for sep in LIST_SEPARATORS:
      with_sep = sum(n for v, n in self.distinct.items() if sep in v)
      if with_sep >= 0.3 * len(self.present):
        return sep
    return None

  def mean_words(self) -> float:
    if not self.present:
      return 0.0
    return sum(len(v.split()) for v in self.present) / len(self.present)

  def type(self) -> str:
    if self.all(_is_int):
      return 'int'
    if self.all(_is_number):
      return 'float'
    if self.all(_is_bool):
      return 'bool'
    if self.all(_is_timestamp):
      return 'timestamp'
    if self.mean_words() >= TEXT_MIN_MEAN_WORDS and (
        len(self.distinct) > 0.5 * len(self.present)):
      return 'text'
    return 'string'


def _numeric_feature(col: _Column) -> Dict[str, Any]:
  numbers = [float(v) for v in col.present]
  opts: Dict[str, Any] = {'scale': 'zscore'}
  if numbers and min(numbers) >= 0 and _skewness(numbers) > SKEWNESS_FOR_LOG:
    opts['log1p'] = True
  if len(col.distinct) > MIN_DISTINCT_FOR_BUCKETS:
    opts['buckets'] = DEFAULT_BUCKETS
  return opts


def _string_feature(col: _Column, rows: int) -> Dict[str, Any]:
  if len(col.distinct) > MAX_VOCABULARY:
    buckets = 1 << max(10, min(18, math.ceil(math.log2(2 * len(col.distinct)))))
    return {'hash_buckets': buckets}
  # Values seen fewer times than this in train share the OOV id.
  return {'frequency_threshold': 5 if rows >= 1000 else 1}


def _label(col: _Column, task: str) -> Tuple[str, Dict[str, Any], str]:
  """(column type, label section, task) for the label column."""
  numeric = col.all(_is_number)
  if task == 'auto':
    if numeric and len(col.distinct) > MIN_DISTINCT_FOR_BUCKETS:
      task = REGRESSION
    elif len(col.distinct) == 2:
      task = BINARY
    elif 2 < len(col.distinct) <= MAX_CLASSES:
      task = MULTICLASS
    else:
      raise UserError(
          f'--label {col.name}: {len(col.distinct)} distinct values in the '
          'sample: neither a class label (2 to '
          f'{MAX_CLASSES} values) nor a number; pass --task')
  if task == REGRESSION:
    if not numeric:
      raise UserError(f'--label {col.name}: a regression label must be '
                      'numeric, and the sample has non-numbers')
    ctype = 'int' if col.all(_is_int) else 'float'
    return ctype, {'column': col.name, 'task': REGRESSION}, task
  if len(col.distinct) < 2:
    raise UserError(f'--label {col.name}: only one value in the sample; a '
                    'classifier needs at least two classes')
  by_count = [v for v, _ in col.distinct.most_common()]
  if task == BINARY:
    if len(by_count) != 2:
      raise UserError(f'--label {col.name}: {len(by_count)} values in the '
                      'sample; a binary task needs exactly two')
    # The minority class is the one worth finding.
    return 'string', {'column': col.name, 'task': BINARY,
                      'classes': sorted(by_count),
                      'positive': by_count[-1]}, task
  return 'string', {'column': col.name, 'task': MULTICLASS,
                    'classes': sorted(by_count)}, task


def draft_config(path: str, label: str, *, name: str,
                 task: str = 'auto', delimiter: Optional[str] = None,
                 header: Optional[bool] = None, encoding: str = 'utf-8',
                 max_rows: int = DEFAULT_SAMPLE_ROWS,
                 tfdv_schema: Optional[str] = None) -> Tuple[str, DatasetConfig]:
  """(YAML text, parsed config) drafted from the file at `path`."""
  if task != 'auto' and task not in TASKS:
    raise UserError(f'--task {task}: choose auto or one of {", ".join(TASKS)}')
  head, lines = _read_sample(path, max_rows, encoding)
  dialect = _dialect(head, delimiter)
  if header is None:
    try:
      header = csv.Sniffer().has_header(head)
    except csv.Error:
      header = False
  try:
    rows = list(csv.reader(io.StringIO('\n'.join(lines)), dialect,
                           skipinitialspace=True))
  except csv.Error as e:
    raise InputError(f'--input {path}: cannot split the lines: {e}') from None
  if header:
    names = [n.strip() for n in rows[0]]
    rows = rows[1:]
  else:
    names = [f'column_{i + 1}' for i in range(len(rows[0]))]
  rows = [r for r in rows if len(r) == len(names)][:max_rows]
  if not rows:
    raise InputError(f'--input {path}: no row has the {len(names)} fields of '
                     'the first line')
  seen = set()
  for n in names:
    if not n or not (n[0].isalpha() or n[0] == '_') or not all(
        ch.isalnum() or ch == '_' for ch in n) or n in seen:
      raise InputError(
          f'--input {path}: column name {n!r} is not usable as a feature name '
          '(letters, digits and _, unique); rename it in the header, or pass '
          '--no-header to draft with generic names')
    seen.add(n)
  if label not in names:
    raise UserError(f'--label {label}: not a column of {path}; columns: '
                    f'{", ".join(names)}')

  cells = [[r[i].strip() for r in rows] for i in range(len(names))]
  occurring = {v for col in cells for v in col} & set(MISSING_TOKENS)
  missing = frozenset(occurring | {''})
  columns = {n: _Column(n, cells[i], missing) for i, n in enumerate(names)}

  column_items, features = [], {}
  label_type, label_section, task = _label(columns[label], task)
  for n in names:
    col = columns[n]
    if n == label:
      column_items.append({'name': n, 'type': label_type})
      continue
    if not col.present:
      # Nothing to learn from; kept as a column so the file still parses.
      column_items.append({'name': n, 'type': 'string'})
      continue
    ctype = col.type()
    separator = col.list_separator() if ctype == 'string' else None
    item: Dict[str, Any] = {'name': n, 'type': ctype}
    if separator:
      item.update({'list': True, 'separator': separator})
      # Vocabulary or hashing is decided by the items, not the joined lists.
      col = _Column(n, [i for v in col.present
                        for i in raw_values.split_list(v, separator)], missing)
    column_items.append(item)
    if ctype in ('int', 'float'):
      features[n] = _numeric_feature(col)
    elif ctype in ('bool', 'timestamp'):
      features[n] = {}
    elif ctype == 'text':
      features[n] = {'hash_buckets': 1000}
    else:
      features[n] = _string_feature(col, len(rows))
  if not features:
    raise UserError(f'--input {path}: no column besides the label has values')

  doc: Dict[str, Any] = {'name': name}
  if tfdv_schema:
    doc['tfdv_schema'] = tfdv_schema
  doc['input'] = {
      'format': 'csv',
      'csv': {'header': bool(header), 'delimiter': dialect.delimiter,
              'skip_initial_space': True,
              'quote_char': dialect.quotechar or '"', 'encoding': encoding},
      'missing_values': sorted(missing),
  }
  doc['columns'] = column_items
  doc['label'] = label_section
  doc['features'] = features
  doc['split'] = {'ratios': {'train': 0.8, 'eval': 0.2}, 'seed': 42,
                  'stratify': task != REGRESSION}
  doc['model'] = {}
  text = (f'# Drafted by python -m pipeline.schema init from {path}\n'
          f'# ({len(rows):,} sampled rows). Review every choice below: types, '
          'transforms,\n# the label and its classes; see README "Adding a '
          'dataset".\n' +
          yaml.safe_dump(doc, sort_keys=False, default_flow_style=None,
                         allow_unicode=True, width=80))
  return text, parse_config(text, where='drafted config')
