"""Drafts a dataset config from a CSV sample: the start of a new dataset.

`python -m pipeline.schema init` calls this. It reads a sample of the file,
works out the dialect (delimiter, header, missing-value tokens), each
column's type (int, float, bool, timestamp, list, text or string), a
transform for each feature (log1p for skewed non-negative numbers, quantile
buckets for many-valued ones, a vocabulary for low-cardinality strings and
hashing for high-cardinality ones) and the task from the label column
(binary, multiclass or regression).

Before that, the column checks (pipeline/column_checks.py) decide what a
model should not see: an empty or constant column, one unique per row (an
id), and one that alone predicts the label almost perfectly (likely
leakage) stay under `columns:` so that rows still parse, but are left out of
`features:`, with the reason in a comment; an integer column that names
things (area, zip or type codes) is read as text and gets a vocabulary
instead of being scaled as a quantity.

The result is a YAML a person edits, not a finished config: every choice is
written out explicitly so it can be read and changed, and the draft is
parsed with the real config loader before it is written, so it always loads.
"""

import collections
import csv
import dataclasses
import io
import math
import textwrap
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

from apache_beam.io.filesystems import FileSystems
import yaml

from core import values as raw_values
from core.config import BINARY
from core.config import DatasetConfig
from core.config import MULTICLASS
from core.config import parse_config
from core.config import REGRESSION
from core.config import TASKS
from core.errors import InputError
from core.errors import UserError
from pipeline import column_checks
from pipeline import flags

DEFAULT_SAMPLE_ROWS = flags.DEFAULT_SAMPLE_ROWS
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


def _read_sample(path: str, max_rows: int,
                 encoding: str) -> Tuple[str, List[str]]:
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
  except Exception as e:  # noqa: BLE001 - any filesystem's error is the user's to fix
    raise InputError(f'--input {path}: cannot read: {e}') from None
  lines = [l for l in lines if l.strip()]
  if not lines:
    raise InputError(f'--input {path}: no data lines')
  return '\n'.join(lines[:50]), lines


def _dialect(head: str, delimiter: Optional[str]) -> Type[csv.Dialect]:
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
  var = sum((x - mean)**2 for x in numbers) / n
  if var <= 0:
    return 0.0
  return sum((x - mean)**3 for x in numbers) / n / var**1.5


class _Column:
  """What the sample says about one column."""

  def __init__(self, name: str, values: List[str], missing: frozenset):
    self.name = name
    # One entry per sampled row, None where the value is missing.
    self.values = [None if v in missing else v for v in values]
    self.present = [v for v in self.values if v is not None]
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
    if self.mean_words() >= TEXT_MIN_MEAN_WORDS and (len(self.distinct)
                                                     > 0.5 * len(self.present)):
      return 'text'
    return 'string'

  def int_counts(self) -> collections.Counter[int]:
    """Rows per integer value ('07' and '7' are one value)."""
    counts: collections.Counter[int] = collections.Counter()
    for v, n in self.distinct.items():
      counts[int(v)] += n
    return counts


def _numeric_feature(col: _Column) -> Tuple[Dict[str, Any], List[str]]:
  """(feature options, why) for a number."""
  numbers = [float(v) for v in col.present]
  opts: Dict[str, Any] = {'scale': 'zscore'}
  why = []
  skew = _skewness(numbers)
  if numbers and min(numbers) >= 0 and skew > SKEWNESS_FOR_LOG:
    opts['log1p'] = True
    why.append(f'skewed (skewness {skew:.1f}): log1p')
  if len(col.distinct) > MIN_DISTINCT_FOR_BUCKETS:
    opts['buckets'] = DEFAULT_BUCKETS
    why.append(f'{len(col.distinct):,} values: quantile buckets')
  return opts, why


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
    return 'string', {
        'column': col.name,
        'task': BINARY,
        'classes': sorted(by_count),
        'positive': by_count[-1]
    }, task
  return 'string', {
      'column': col.name,
      'task': MULTICLASS,
      'classes': sorted(by_count)
  }, task


def _label_targets(col: _Column, section: Dict[str, Any]) -> List[float]:
  """The label of each sampled row as leakage scoring wants it: 1/0 for
  the positive class, a class index, or the number; NaN where missing."""
  nan = float('nan')
  if section['task'] == REGRESSION:
    return [nan if v is None else float(v) for v in col.values]
  if section['task'] == BINARY:
    return [
        nan if v is None else float(v == section['positive'])
        for v in col.values
    ]
  index = {c: float(i) for i, c in enumerate(section['classes'])}
  return [nan if v is None else index[v] for v in col.values]


@dataclasses.dataclass
class ColumnSummary:
  """One row of the summary `schema init` prints: what was drafted, why."""
  column: str
  type: str
  treatment: str
  missing: float  # share of sampled rows
  distinct: int
  why: str


@dataclasses.dataclass
class _Drafted:
  """The decision for one column: its `columns:` item, its feature options
  (None: left out of the features), the summary row, what the checks found,
  and a comment for the draft."""
  item: Dict[str, Any]
  feature: Optional[Dict[str, Any]]
  summary: ColumnSummary
  finding: Optional[column_checks.Finding] = None
  comment: str = ''


@dataclasses.dataclass
class Draft:
  """A drafted config: the YAML, the parsed config, the summary rows, and
  what the column checks found (left-out columns, codes)."""
  text: str
  config: DatasetConfig
  rows: int
  columns: List[ColumnSummary]
  findings: List[column_checks.Finding]

  @property
  def warnings(self) -> List[column_checks.Finding]:
    """Findings a person must see even without reading the draft."""
    return [f for f in self.findings if f.check == column_checks.LEAKAGE]


def _treatment(ctype: str, opts: Dict[str, Any], is_list: bool) -> str:
  if ctype in ('int', 'float'):
    parts = [opts.get('scale', 'zscore')]
    if opts.get('log1p'):
      parts.append('log1p')
    if opts.get('buckets'):
      parts.append(f'{opts["buckets"]} buckets')
    return ', '.join(parts)
  if ctype == 'bool':
    return 'false/true ids'
  if ctype == 'timestamp':
    return 'hour, weekday, month'
  if ctype == 'text':
    return f'word hashing ({opts["hash_buckets"]:,})'
  kind = (f'hashing ({opts["hash_buckets"]:,})'
          if opts.get('hash_buckets') else 'vocabulary')
  return kind + (' of items' if is_list else '')


def _draft_column(col: _Column, rows: int, targets: List[float],
                  task: str) -> _Drafted:
  """Type, treatment and checks of one feature column, in the order an
  expert works: nothing to learn (empty, constant, an id), then what the
  values mean (an integer code is a category), then whether it gives the
  label away, and only then how to scale it."""
  name = col.name
  missing = col.missing / rows
  distinct = len(col.distinct)

  def left_out(item, finding, shown_type):
    return _Drafted(
        item, None,
        ColumnSummary(name, shown_type, 'left out', missing, distinct,
                      finding.reason), finding, finding.detail)

  if not col.present:
    return left_out({
        'name': name,
        'type': 'string'
    }, column_checks.empty(name, rows), 'string')
  ctype = col.type()
  if distinct == 1 and not col.missing:
    return left_out({
        'name': name,
        'type': ctype
    }, column_checks.constant(name, col.present[0]), ctype)
  item: Dict[str, Any] = {'name': name, 'type': ctype}
  separator = col.list_separator() if ctype == 'string' else None
  why, comment, finding = [], '', None
  categorical = ctype in ('string', 'bool')
  if separator:
    item.update({'list': True, 'separator': separator})
    # Vocabulary or hashing is decided by the items, not the joined lists.
    items = _Column(
        name,
        [i for v in col.present for i in raw_values.split_list(v, separator)],
        frozenset())
    distinct = len(items.distinct)
  elif ctype in ('string', 'int'):
    int_counts = col.int_counts() if ctype == 'int' else None
    found = column_checks.identifier(
        name, ctype, len(col.present),
        len(col.distinct if int_counts is None else int_counts), int_counts)
    if found:
      return left_out(item, found, ctype)
    if int_counts is not None:  # an int column
      if distinct == 1:
        why.append('one value, else missing: only its presence tells')
        categorical = True
      else:
        finding = column_checks.integer_code(name, int_counts)
        if finding:
          why.append(finding.reason)
          comment = finding.detail + '; read as text, one id per value'
          categorical = True
      if categorical:
        item['type'] = 'string'
  if ctype == 'float' and distinct == 1:
    why.append('one value, else missing: only its presence tells')
    item['type'] = 'string'
    categorical = True

  if ctype != 'text' and not separator:
    values: List[Any]  # one per sampled row, None where missing
    if ctype == 'bool':  # true, yes and 1 are one value
      values = [
          None if v is None else raw_values.parse_bool(v) for v in col.values
      ]
    elif categorical:
      values = col.values
    elif ctype == 'timestamp':
      values = [
          None if v is None else raw_values.parse_timestamp(v)
          for v in col.values
      ]
    else:
      values = [None if v is None else float(v) for v in col.values]
    score = column_checks.leakage_score(
        values, targets, task, numeric=not categorical)
    if score is not None and score.leaks:
      return left_out(
          item, column_checks.leakage(name, score, column_checks.DRAFT_ADVICE),
          item['type'])

  if ctype == 'text':
    opts = {'hash_buckets': 1000}
    why.append('free text: word tokens')
  elif ctype in ('bool', 'timestamp'):
    opts = {}
  elif categorical:
    opts = _string_feature(items if separator else col, rows)
    if 'hash_buckets' in opts:
      why.append(f'{distinct:,} values: hashed')
  else:
    opts, numeric_why = _numeric_feature(col)
    why.extend(numeric_why)
  summary = ColumnSummary(name, item['type'] + (' list' if separator else ''),
                          _treatment(item['type'], opts, bool(separator)),
                          missing, distinct, '; '.join(why))
  return _Drafted(item, opts, summary, finding, comment or '; '.join(why))


def _comment(text: str, indent: str = '') -> str:
  """`text` as YAML comment lines within 80 columns."""
  lines = textwrap.wrap(text, width=78 - len(indent), subsequent_indent='  ')
  return ''.join(f'{indent}# {line}\n' for line in lines)


def _yaml(value: Any) -> str:
  return yaml.safe_dump(
      value,
      sort_keys=False,
      default_flow_style=None,
      allow_unicode=True,
      width=80)


def _render(doc_head: Dict[str, Any], drafted: List[_Drafted],
            label_item: Dict[str, Any], names: List[str], label: str,
            label_section: Dict[str, Any], tail: Dict[str, Any]) -> str:
  """The YAML with a comment on every column left out or recast."""
  by_name = {d.item['name']: d for d in drafted}
  out = [_yaml(doc_head), 'columns:\n']
  for n in names:
    if n == label:
      out.append(_yaml([label_item]))
      continue
    d = by_name[n]
    if d.feature is None:
      out.append(
          _comment(f'{n}: not a feature ({d.summary.why}); kept so '
                   'that rows parse'))
    elif d.item['type'] == 'string' and d.finding is not None:
      out.append(_comment(f'{n}: integer code, read as text'))
    out.append(_yaml([d.item]))
  out.append(_yaml({'label': label_section}))
  left = [d for d in drafted if d.feature is None]
  if left:
    out.append('# Left out of the features (add back any you disagree '
               'with):\n')
    for d in left:
      out.append(_comment(d.comment, indent='  ').replace('  # ', '#   '))
  out.append('features:\n')
  for d in drafted:
    if d.feature is None:
      continue
    if d.comment:
      out.append(_comment(d.comment, indent='  '))
    out.append('  ' + _yaml({d.item['name']: d.feature}))
  out.append(_yaml(tail))
  return ''.join(out)


def draft_config(path: str,
                 label: str,
                 *,
                 name: str,
                 task: str = 'auto',
                 delimiter: Optional[str] = None,
                 header: Optional[bool] = None,
                 encoding: str = 'utf-8',
                 max_rows: int = DEFAULT_SAMPLE_ROWS,
                 tfdv_schema: Optional[str] = None) -> Draft:
  """The config drafted from the file at `path`, with its summary."""
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
    rows = list(
        csv.reader(
            io.StringIO('\n'.join(lines)), dialect, skipinitialspace=True))
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

  label_col = columns[label]
  label_type, label_section, task = _label(label_col, task)
  targets = _label_targets(label_col, label_section)
  drafted = [
      _draft_column(columns[n], len(rows), targets, task)
      for n in names
      if n != label
  ]
  if not any(d.feature is not None for d in drafted):
    reasons = '; '.join(f'{d.item["name"]}: {d.summary.why}'
                        for d in drafted) or 'no other column'
    raise UserError(f'--input {path}: no column besides the label is usable '
                    f'as a feature ({reasons})')
  label_summary = ColumnSummary(
      label, label_type, f'label ({task})', label_col.missing / len(rows),
      len(label_col.distinct),
      f'positive class {label_section["positive"]!r}' if task == BINARY else '')
  summaries = {d.item['name']: d.summary for d in drafted}
  summaries[label] = label_summary

  head_doc: Dict[str, Any] = {'name': name}
  if tfdv_schema:
    head_doc['tfdv_schema'] = tfdv_schema
  head_doc['input'] = {
      'format': 'csv',
      'csv': {
          'header': bool(header),
          'delimiter': dialect.delimiter,
          'skip_initial_space': True,
          'quote_char': dialect.quotechar or '"',
          'encoding': encoding
      },
      'missing_values': sorted(missing),
  }
  tail = {
      'split': {
          'ratios': {
              'train': 0.8,
              'eval': 0.2
          },
          'seed': 42,
          'stratify': task != REGRESSION
      },
      'model': {}
  }
  text = (f'# Drafted by python -m pipeline.schema init from {path}\n'
          f'# ({len(rows):,} sampled rows). Review every choice below: types, '
          'transforms,\n# the label and its classes; see README "Adding a '
          'dataset".\n' + _render(head_doc, drafted, {
              'name': label,
              'type': label_type
          }, names, label, label_section, tail))
  return Draft(text, parse_config(text, where='drafted config'), len(rows),
               [summaries[n] for n in names],
               [d.finding for d in drafted if d.finding is not None])
