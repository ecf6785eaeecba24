"""Per-column checks a person makes before training on a table.

A column can look usable and still be worthless or harmful to a model:
empty or constant (nothing to learn), unique per row (an identifier: a model
memorises it and learns nothing that carries over), an integer code scaled as
if its values were magnitudes (area 17 is not "more" than area 3), or a column
that gives the label away (computed from it, or only known after it). The
rules here decide each case from a sample of the column's values and, for
leakage, of the label.

`schema init` (pipeline/config_draft.py) uses them to draft a config that
leaves such columns out of the features, or treats codes as categories, and
says why; `preprocess` (pipeline/feature_warnings.py) runs them on the
features of a curated config and reports what it finds as warnings. Plain
Python and numpy, no Beam or TensorFlow, so both paths share one definition.

Leakage is scored column by column: how well the column's values alone
predict the label, measured out of fold so that a many-valued column cannot
score by memorising rows. Values are grouped (a category, a quantile bin of a
number, missing as a group of its own), the label rate or mean of each group
is estimated on the other folds, and the held-out rows are scored with it:
ROC AUC for a binary label, the mean one-vs-rest AUC over classes for a
multiclass label, R^2 for a regression label. A number is also scored by its
raw order (AUC, or the squared correlation), which needs no fitting.
"""

import collections
import dataclasses
import functools
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

BINARY, MULTICLASS, REGRESSION = 'binary', 'multiclass', 'regression'

# What a finding is about; the names appear in the manifest.
EMPTY = 'empty'
CONSTANT = 'constant'
IDENTIFIER = 'identifier'
INTEGER_CODE = 'integer_code'
LEAKAGE = 'leakage'

# A column alone predicting the label this well is likely leakage.
LEAK_AUC = 0.98
LEAK_R2 = 0.95
# Unique in at least this share of the rows that have a value: an id.
IDENTIFIER_UNIQUE_SHARE = 0.95
MIN_ROWS_FOR_IDENTIFIER = 20
# An integer code repeats: on average each value is in at least this many rows.
MIN_ROWS_PER_CODE = 5
# Without a name hint, a code's values fill at most 1/CODE_SPARSITY of the
# integers between the common values, and there are at most this many.
CODE_SPARSITY = 3.0
MAX_CODES_WITHOUT_HINT = 200
# Share of rows at each end left out when measuring how an integer column
# fills its range (so a long tail does not make counts look like codes).
CORE_TAIL = 0.05
# Consecutive integers (row numbers) fill their range at least this densely.
SEQUENCE_SPARSITY = 1.5
TOP_VALUES = 5
# Leakage scoring.
# Quantile bins of a number: about one per LEAK_ROWS_PER_BIN rows, within
# LEAK_BINS (fewer, and a leak that is not monotone blurs) and LEAK_MAX_BINS.
LEAK_BINS = 20
LEAK_MAX_BINS = 100
LEAK_ROWS_PER_BIN = 50
LEAK_FOLDS = 5
LEAK_MAX_ROWS = 50_000
MIN_ROWS_FOR_LEAKAGE = 30
MIN_ROWS_PER_CLASS = 5
# A number missing in more rows than this is scored by its groups only.
ORDER_MIN_PRESENT = 0.95

# Name words that mark an integer column as a code or a per-row id.
CODE_WORDS = frozenset(
    ('id', 'ids', 'code', 'codes', 'zip', 'zipcode', 'postcode', 'postal',
     'fips', 'area', 'tract', 'district', 'region', 'county', 'zone', 'station',
     'category', 'type', 'class', 'kind', 'group'))
ID_WORDS = frozenset(('id', 'uuid', 'guid', 'key', 'index', 'idx', 'serial'))


@dataclasses.dataclass(frozen=True)
class Finding:
  """One thing a check found about one column.

  `reason` is a few words for a table cell; `detail` the sentence for a
  warning or a comment in a drafted config; `score` the leakage score
  (AUC or R^2) where there is one.
  """
  column: str
  check: str
  reason: str
  detail: str
  score: Optional[float] = None

  def to_json(self) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        'column': self.column,
        'check': self.check,
        'reason': self.reason,
        'detail': self.detail
    }
    if self.score is not None:
      doc['score'] = round(self.score, 4)
    return doc


# -------------------------------------------------------------- name hints


def name_words(name: str) -> List[str]:
  """Lower-cased words of a column name: snake_case, camelCase, digits."""
  spaced = re.sub(r'([a-z0-9])([A-Z])', r'\1 \2', name)
  return [w.lower() for w in re.split(r'[^A-Za-z]+|\s+', spaced) if w]


def _hint(name: str, words: frozenset) -> Optional[str]:
  return next((w for w in name_words(name) if w in words), None)


# ---------------------------------------------------- empty and constant


def empty(name: str, rows: int, what: str = 'sampled rows') -> Finding:
  return Finding(
      name, EMPTY, 'empty',
      f'{name} has no value in the {rows:,} {what}: nothing to '
      'learn from')


def constant(name: str,
             value: Any,
             missing: int = 0,
             imputed: bool = False) -> Finding:
  """One value in every row (missing rows, if any, imputed to it)."""
  shown = _show(value)
  if missing and imputed:
    return Finding(
        name, CONSTANT, f'constant: {shown}, missing imputed',
        f'{name} has the one value {shown} (its {missing:,} missing '
        'values are imputed to it): nothing to learn from')
  return Finding(
      name, CONSTANT, f'constant: {shown}',
      f'{name} has the one value {shown} in every row: nothing to '
      'learn from')


def _show(value: Any) -> str:
  if isinstance(value, bytes):
    value = value.decode('utf-8', errors='backslashreplace')
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  text = str(value)
  return repr(text if len(text) <= 30 else text[:29] + '\u2026')


# ------------------------------------------------- identifiers and codes


def _fill(values: Sequence[int], counts: Mapping[int, int]) -> Tuple[int, int]:
  """(integers the common values span, in steps of their gcd; how many of
  them occur): how densely an integer column fills its range, ignoring the
  CORE_TAIL share of rows at either end."""
  ordered = sorted(values)
  total = sum(counts[v] for v in ordered)
  core, seen = [], 0
  for v in ordered:
    before, seen = seen, seen + counts[v]
    if seen > CORE_TAIL * total and before < (1 - CORE_TAIL) * total:
      core.append(v)
  if len(core) < 3:
    core = ordered
  step = functools.reduce(math.gcd,
                          (b - a for a, b in zip(core, core[1:])), 0) or 1
  span = (core[-1] - core[0]) // step + 1
  return int(span), len(core)


def identifier(
    name: str,
    kind: str,
    present: int,
    distinct: int,
    int_counts: Optional[Mapping[int, int]] = None) -> Optional[Finding]:
  """A column unique per row: text labels or ids, or consecutive integers.

  `kind` is 'string' or 'int' (other types are never ids: a float or a
  timestamp may well be unique per row and still be a measurement); an int
  column needs its `int_counts` (rows per value). An integer unique per row
  is an id only when its name says so or it counts up like a row number:
  amounts and epoch times are unique too.
  """
  if kind not in ('string', 'int') or present < MIN_ROWS_FOR_IDENTIFIER:
    return None
  if distinct < IDENTIFIER_UNIQUE_SHARE * present:
    return None
  share = min(1.0, distinct / present)
  because = ''
  if kind == 'int':
    if int_counts is None:
      raise ValueError(f'identifier({name!r}): an int column needs its '
                       'int_counts')
    hint = _hint(name, ID_WORDS)
    span, filled = _fill(list(int_counts), int_counts)
    if not hint and span > SEQUENCE_SPARSITY * filled:
      return None
    because = '; ' + (f'"{hint}" in the name'
                      if hint else 'consecutive integers')
  return Finding(
      name, IDENTIFIER, f'identifier: {share:.0%} unique',
      f'{name} is unique per row ({distinct:,} values in '
      f'{present:,} rows{because}): an identifier, which a model '
      'can only memorise')


def integer_code(name: str, counts: Mapping[int, int]) -> Optional[Finding]:
  """An integer column whose values name things rather than measure them.

  Codes repeat (each value in several rows) and have either a name that
  says so (`area`, `zip`, `_id`, `type`, ...) or values scattered over a
  range they fill sparsely (101, 205, 317, ...). Consecutive small integers
  without such a name (counts, ratings, years) stay numbers, and so do
  many-valued ones (amounts, epoch times).
  """
  distinct = len(counts)
  present = sum(counts.values())
  if distinct < 3 or distinct * MIN_ROWS_PER_CODE > present:
    return None
  hint = _hint(name, CODE_WORDS)
  span, filled = _fill(list(counts), counts)
  sparse = span >= CODE_SPARSITY * filled
  if not hint and not (sparse and distinct <= MAX_CODES_WITHOUT_HINT):
    return None
  top = sum(n for _, n in collections.Counter(counts).most_common(TOP_VALUES))
  evidence = [
      f'{distinct:,} distinct values',
      f'the top {min(TOP_VALUES, distinct)} in {top / present:.0%} of '
      'rows'
  ]
  if hint:
    evidence.append(f'"{hint}" in the name')
  if sparse:
    evidence.append(f'spread over {span:,} possible values')
  return Finding(
      name, INTEGER_CODE, f'integer code: {distinct:,} values',
      f'{name} looks like an integer code, not a quantity '
      f'({", ".join(evidence)})')


# ---------------------------------------------------------------- leakage


@dataclasses.dataclass(frozen=True)
class Score:
  metric: str  # 'AUC' or 'R²'
  value: float

  @property
  def leaks(self) -> bool:
    return self.value >= (LEAK_R2 if self.metric == 'R²' else LEAK_AUC)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
  """Area under the ROC curve; ties count one half (Mann-Whitney U)."""
  positive = np.asarray(positive, dtype=bool)
  n1 = int(positive.sum())
  n0 = len(positive) - n1
  if not n1 or not n0:
    return float('nan')
  _, inverse, counts = np.unique(
      scores, return_inverse=True, return_counts=True)
  ends = np.cumsum(counts)
  ranks = (ends - (counts - 1) / 2.0)[inverse]
  return float((ranks[positive].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _groups_of_numbers(x: np.ndarray) -> np.ndarray:
  """Group ids: each value when few, else quantile bins; missing last."""
  present = ~np.isnan(x)
  values = x[present]
  distinct = np.unique(values)
  bins = min(LEAK_MAX_BINS, max(LEAK_BINS, len(values) // LEAK_ROWS_PER_BIN))
  if len(distinct) <= bins:
    ids = np.searchsorted(distinct, values)
    size = len(distinct)
  else:
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    ids = np.searchsorted(edges, values, side='right')
    size = len(edges) + 1
  out = np.full(len(x), size, dtype=np.int64)
  out[present] = ids
  return out


def _groups_of_values(values: Sequence[Any]) -> np.ndarray:
  index: Dict[Any, int] = {}
  return np.fromiter((index.setdefault(v, len(index)) for v in values),
                     dtype=np.int64,
                     count=len(values))


def _out_of_fold(groups: np.ndarray, target: np.ndarray) -> np.ndarray:
  """Each row's group mean of `target` ([n, k]) from the other folds.

  Smoothed towards the overall mean by one pseudo-row, so a group seen once
  elsewhere (or never: an id) predicts about the overall mean.
  """
  n = len(groups)
  fold = np.random.RandomState(0).permutation(n) % LEAK_FOLDS
  size = int(groups.max()) + 1
  prior = target.mean(axis=0)
  out = np.empty_like(target, dtype=np.float64)
  for f in range(LEAK_FOLDS):
    fit = fold != f
    sums = np.zeros((size, target.shape[1]))
    np.add.at(sums, groups[fit], target[fit])
    counts = np.bincount(groups[fit], minlength=size)[:, None]
    out[~fit] = ((sums + prior) / (counts + 1.0))[groups[~fit]]
  return out


def _macro_auc(scores: np.ndarray, labels: np.ndarray, classes: int,
               free_direction: bool) -> float:
  aucs = []
  for c in range(classes):
    positive = labels == c
    if MIN_ROWS_PER_CLASS <= positive.sum() <= len(labels) - MIN_ROWS_PER_CLASS:
      s = scores[:, c] if scores.ndim == 2 else scores
      auc = roc_auc(s, positive)
      aucs.append(max(auc, 1 - auc) if free_direction else auc)
  return float(np.mean(aucs)) if aucs else float('nan')


def _r2(prediction: np.ndarray, y: np.ndarray) -> float:
  total = float(((y - y.mean())**2).sum())
  if total <= 0:
    return float('nan')
  return 1.0 - float(((y - prediction)**2).sum()) / total


def leakage_score(values: Sequence[Any], labels: Sequence[float], task: str,
                  numeric: bool) -> Optional[Score]:
  """How well `values` alone predict `labels`, or None if the sample cannot
  say (too few rows or classes).

  `values`: one per row, None for missing; numbers when `numeric`, else any
  hashable category. `labels`: binary 0/1, multiclass class index, or a
  regression target; rows with a NaN label are left out.
  """
  y = np.asarray(labels, dtype=np.float64)
  keep = ~np.isnan(y)
  if len(y) > LEAK_MAX_ROWS:  # an even spread, not the first rows
    keep &= np.arange(len(y)) % math.ceil(len(y) / LEAK_MAX_ROWS) == 0
  rows = np.flatnonzero(keep)
  if len(rows) < MIN_ROWS_FOR_LEAKAGE:
    return None
  y = y[rows]
  if numeric:
    x = np.array(
        [np.nan if values[i] is None else float(values[i]) for i in rows],
        dtype=np.float64)
    groups = _groups_of_numbers(x)
    present = ~np.isnan(x)
    ordered = present.mean() >= ORDER_MIN_PRESENT and present.sum() >= (
        MIN_ROWS_FOR_LEAKAGE)
  else:
    groups = _groups_of_values([values[i] for i in rows])
    ordered = False
  if task == REGRESSION:
    by_group = _r2(_out_of_fold(groups, y[:, None])[:, 0], y)
    by_order = float('nan')
    if ordered and np.std(x[present]) > 0 and np.std(y[present]) > 0:
      by_order = float(np.corrcoef(x[present], y[present])[0, 1]**2)
    metric = 'R²'
  else:
    classes = int(y.max()) + 1 if task == MULTICLASS else 2
    labels_int = y.astype(np.int64)
    if task == BINARY:
      counts = np.bincount(labels_int, minlength=2)
      if counts.min() < MIN_ROWS_PER_CLASS:
        return None
      by_group = roc_auc(
          _out_of_fold(groups, y[:, None])[:, 0], labels_int == 1)
    else:
      one_hot = np.eye(classes)[labels_int]
      by_group = _macro_auc(
          _out_of_fold(groups, one_hot),
          labels_int,
          classes,
          free_direction=False)
    by_order = float('nan')
    if ordered and task == BINARY:
      auc = roc_auc(x[present], labels_int[present] == 1)
      by_order = max(auc, 1 - auc)
    elif ordered:
      by_order = _macro_auc(
          x[present], labels_int[present], classes, free_direction=True)
    metric = 'AUC'
  known = [s for s in (by_group, by_order) if not math.isnan(s)]
  return Score(metric, max(known)) if known else None


def leakage(name: str, score: Score, advice: str) -> Finding:
  """The finding for a column whose score says it gives the label away."""
  return Finding(
      name, LEAKAGE, f'leakage: {score.metric} {score.value:.3f} '
      'alone', f'`{name}` alone predicts the label with {score.metric} '
      f'{score.value:.3f}: likely leakage; {advice}', score.value)


DRAFT_ADVICE = ('add it back under `features:` if it is really known at '
                'serving time')
CURATED_ADVICE = ('keep it under `features:` only if it is really known at '
                  'serving time')
