"""Dataset configuration: the one place where a dataset is described.

Everything the pipeline and the trainer know about a dataset (how its files are
laid out, which columns it has, which one is the label, how each feature is
transformed, which crosses to build, how rows are split) comes from a YAML file
in `schemas/`. The code stays dataset-agnostic; a new dataset is a new YAML.

The YAML is validated when it is loaded, so that a typo fails at once with a
message naming the key, the value and what is allowed, instead of surfacing as
a TensorFlow error half-way through a Beam job.
"""

import dataclasses
import hashlib
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import yaml

from core.errors import ConfigError

INPUT_FORMATS = ('csv', 'parquet', 'tfrecord')
# bool: true/false (and 1/0, yes/no); timestamp: ISO-8601 date-time or epoch
# seconds, carried as int64 epoch seconds (UTC); text: free text, tokenized.
COLUMN_TYPES = ('int', 'float', 'string', 'bool', 'timestamp', 'text')
NUMERIC_TYPES = ('int', 'float')
SCALINGS = ('zscore', 'minmax', 'none')
IMPUTATIONS = ('mean', 'zero')
SPLIT_NAMES = ('train', 'eval', 'test')
BINARY, MULTICLASS, REGRESSION = 'binary', 'multiclass', 'regression'
TASKS = (BINARY, MULTICLASS, REGRESSION)
# Calendar parts a timestamp feature can be split into, and how many values
# each takes (ids 0 .. n-1; one more id means "missing").
TIMESTAMP_PARTS = {'hour': 24, 'day_of_week': 7, 'month': 12}
# Window aggregations (see pipeline/windows.py): what a window may compute,
# what its entity may be, and the units of a duration like 7d.
AGGREGATES = ('count', 'sum', 'mean', 'min', 'max')
ENTITY_TYPES = ('string', 'int')
DURATION_UNITS = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 7 * 86400}
# The field of a served instance that carries its entity's earlier events.
HISTORY_FIELD = 'history'
DEFAULT_TEXT_HASH_BUCKETS = 1000
DEFAULT_LIST_SEPARATOR = '|'

# Transformed-feature name suffixes; the trainer derives roles from these via
# `transformed_features()` rather than parsing names itself.
BUCKET_SUFFIX = '_bucket'
CROSS_SEPARATOR = '_x_'
SIN_SUFFIX, COS_SUFFIX = '_sin', '_cos'

_NAME_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
# The largest integer a config setting may hold: the sizes, counts and seeds
# it sets are int32 in the graphs and arrays that use them.
MAX_SETTING = 2**31 - 1
# The longest window: the span of the timestamps a row can carry (years 1 to
# 9999, core/values.py); a longer window holds exactly the same rows.
MAX_WINDOW_SECONDS = 2 * 253402300799


@dataclasses.dataclass(frozen=True)
class CsvOptions:
  """CSV dialect of the raw files."""
  delimiter: str = ','
  skip_initial_space: bool = True
  quote_char: str = '"'
  header: bool = False
  comment_prefix: Optional[str] = None
  encoding: str = 'utf-8'
  max_line_bytes: int = 65536


@dataclasses.dataclass(frozen=True)
class Column:
  name: str
  type: str
  allowed_values: Optional[Tuple[str, ...]] = None
  # A list-valued (string) column: several values per row; in CSV one field
  # holding them joined by `separator`.
  is_list: bool = False
  separator: str = DEFAULT_LIST_SEPARATOR
  # Not in the input files: computed by the pipeline (a window aggregation,
  # see `windows:`), then carried like any other float column.
  derived: bool = False
  # The largest share of rows (0 to 1) that may miss a value, or None when
  # the config leaves it to the TFDV schema. Validated by TFDV as the
  # feature's presence.min_fraction, 1 - max_missing (pipeline/validation.py
  # checks that the curated schema says the same).
  max_missing: Optional[float] = None

  @property
  def raw_type(self) -> str:
    """How the value is carried: 'int', 'float' or 'string'."""
    if self.type in ('bool', 'timestamp'):
      return 'int'
    if self.type == 'text':
      return 'string'
    return self.type


@dataclasses.dataclass(frozen=True)
class Label:
  """The target. Classification labels are strings with known classes.

  binary: `classes` has two entries and `positive` is one of them.
  multiclass: `classes` in the order of the model's probabilities.
  regression: a numeric column; `classes` is empty, `log_target` fits
  log1p(y) and serves expm1 of the prediction.
  """
  column: str
  classes: Tuple[str, ...]
  positive: Optional[str]
  aliases: Mapping[str, str]
  task: str = BINARY
  log_target: bool = False

  @property
  def is_classification(self) -> bool:
    return self.task != REGRESSION


@dataclasses.dataclass(frozen=True)
class NumericFeature:
  name: str
  impute: str = 'mean'
  log1p: bool = False
  scale: str = 'zscore'
  buckets: int = 0


@dataclasses.dataclass(frozen=True)
class CategoricalFeature:
  name: str
  vocabulary: bool = True
  top_k: Optional[int] = None
  frequency_threshold: int = 0
  oov_buckets: int = 1
  hash_buckets: int = 0
  embedding_dim: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class BoolFeature:
  """A boolean: id 0 false, 1 true, 2 missing."""
  name: str


@dataclasses.dataclass(frozen=True)
class TimestampFeature:
  """Calendar parts of a timestamp (UTC): each an id (wide and embedded)
  and, when `cyclical`, its sine and cosine (deep), so that 23h and 0h are
  neighbours."""
  name: str
  parts: Tuple[str, ...] = tuple(TIMESTAMP_PARTS)
  cyclical: bool = True

  def part_name(self, part: str) -> str:
    return f'{self.name}_{part}'


@dataclasses.dataclass(frozen=True)
class TextFeature:
  """Free text: lower-cased, split into word tokens, each token hashed (or
  looked up in a vocabulary); a bag of ids, multi-hot in the wide part and
  a mean embedding in the deep part."""
  name: str
  hash_buckets: int = DEFAULT_TEXT_HASH_BUCKETS
  vocabulary: bool = False
  top_k: Optional[int] = None
  frequency_threshold: int = 0
  oov_buckets: int = 1
  embedding_dim: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class WindowFeature:
  """An aggregation over an entity's trailing window of rows (`windows:`).

  For a row with entity e and timestamp t: `aggregate` of `value` over the
  rows of entity e whose `timestamp` is in (t - seconds, t], the row itself
  included. Its result is the derived float column `name`, a numeric
  feature like any other. Semantics in pipeline/windows.py.
  """
  name: str
  entity: str
  timestamp: str
  seconds: int
  aggregate: str
  value: Optional[str] = None
  window: str = ''  # as written in the config, e.g. '7d'


@dataclasses.dataclass(frozen=True)
class Cross:
  features: Tuple[str, ...]
  hash_buckets: int

  @property
  def name(self) -> str:
    return CROSS_SEPARATOR.join(self.features)


@dataclasses.dataclass(frozen=True)
class SplitConfig:
  ratios: Mapping[str, float]
  seed: int = 42
  stratify: bool = True


@dataclasses.dataclass(frozen=True)
class TransformedFeature:
  """One output of the transform graph, and what the model does with it."""
  name: str
  kind: str  # 'numeric' (float, deep) or 'categorical' (int id)
  wide: bool
  deep: bool
  embedding_dim: Optional[int] = None
  # Categorical with any number of ids per row (a list or a bag of tokens).
  multivalent: bool = False


@dataclasses.dataclass(frozen=True)
class MetricRule:
  """What one metric of a model must satisfy to be pushed (trainer.push).

  `minimum` / `maximum` hold the candidate's value on its own; the changes
  hold it against the served model's value on the same rows: the metric
  may drop by at most `max_decrease` (a metric where higher is better) or
  rise by at most `max_increase` (lower is better). None: not checked.
  """
  metric: str
  minimum: Optional[float] = None
  maximum: Optional[float] = None
  max_decrease: Optional[float] = None
  max_increase: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Blessing:
  """`validation:` rules a candidate model meets before it is served.

  Overall metric rules (`metrics`), change rules per slice of the raw
  columns `slice_columns` (numeric ones cut into `slice_buckets` quantile
  buckets) for slices of at least `slice_min_rows` rows, and sanity
  checks: same signatures and raw inputs as the served model unless
  `allow_signature_change`, finite outputs, and a batch of
  `latency_batch_rows` rows answered within `max_latency_ms`.
  """
  metrics: Tuple[MetricRule, ...] = ()
  slice_columns: Tuple[str, ...] = ()
  slice_buckets: int = 4
  slice_min_rows: int = 100
  slice_metrics: Tuple[MetricRule, ...] = ()
  allow_signature_change: bool = False
  latency_batch_rows: int = 100
  max_latency_ms: float = 1000.0


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  name: str
  format: str
  csv: CsvOptions
  missing_values: Tuple[str, ...]
  missing_category: str
  columns: Tuple[Column, ...]
  label: Label
  numeric: Tuple[NumericFeature, ...]
  categorical: Tuple[CategoricalFeature, ...]
  crosses: Tuple[Cross, ...]
  split: SplitConfig
  model: Mapping[str, Any]
  booleans: Tuple[BoolFeature, ...] = ()
  timestamps: Tuple[TimestampFeature, ...] = ()
  texts: Tuple[TextFeature, ...] = ()
  # Window aggregations; each also has a derived float Column in `columns`
  # and a NumericFeature in `numeric`.
  windows: Tuple[WindowFeature, ...] = ()
  # The curated TFDV schema of the raw data, as written in the YAML: a path
  # relative to the YAML's directory (or absolute, or gs://...). None when the
  # dataset has none yet; see pipeline/validation.py.
  tfdv_schema: Optional[str] = None
  # The chance that a validation run on unchanged data reports any drift or
  # skew at all (`validation: {false_alarm_rate: ...}`; pipeline/drift.py).
  false_alarm_rate: float = 0.01
  # What a trained model must meet to be pushed to serving (`validation:`
  # metrics, slices, signatures, latency; trainer/blessing.py).
  blessing: Blessing = Blessing()
  source_text: str = dataclasses.field(repr=False, compare=False, default='')

  @property
  def column_names(self) -> List[str]:
    """The columns of the input files, in file order: derived (window)
    columns, which the files do not have, are left out."""
    return [c.name for c in self.columns if not c.derived]

  @property
  def derived_columns(self) -> List[Column]:
    """Columns the pipeline computes (one per window), in config order."""
    return [c for c in self.columns if c.derived]

  def column(self, name: str) -> Column:
    for c in self.columns:
      if c.name == name:
        return c
    raise KeyError(name)

  @property
  def feature_columns(self) -> List[Column]:
    """Raw columns the model consumes (label excluded), in file order."""
    used = {
        f.name for group in (self.numeric, self.categorical, self.booleans,
                             self.timestamps, self.texts) for f in group
    }
    return [c for c in self.columns if c.name in used]

  @property
  def raw_columns(self) -> List[Column]:
    """Raw columns the pipeline carries: features, the label, and the
    columns that window aggregations read (entity, timestamp, value)."""
    used = {c.name for c in self.feature_columns} | {self.label.column}
    for w in self.windows:
      used.update(n for n in (w.entity, w.timestamp, w.value) if n)
    return [c for c in self.columns if c.name in used]

  @property
  def config_hash(self) -> str:
    return hashlib.sha256(self.source_text.encode('utf-8')).hexdigest()

  def transformed_features(self) -> List[TransformedFeature]:
    """Every model input the transform graph produces, with its role.

    Classic wide & deep roles: scaled numerics feed the deep part; quantile
    buckets and hashed crosses feed the wide (linear) part; categorical ids feed
    both (one-hot in the wide part, an embedding in the deep part).
    """
    out = []
    for f in self.numeric:
      if f.scale != 'none' or not f.buckets:
        out.append(TransformedFeature(f.name, 'numeric', wide=False, deep=True))
      if f.buckets:
        out.append(
            TransformedFeature(
                f.name + BUCKET_SUFFIX, 'categorical', wide=True, deep=False))
    lists = {c.name for c in self.columns if c.is_list}
    for c in self.categorical:
      out.append(
          TransformedFeature(
              c.name,
              'categorical',
              wide=True,
              deep=True,
              embedding_dim=c.embedding_dim,
              multivalent=c.name in lists))
    for b in self.booleans:
      out.append(
          TransformedFeature(b.name, 'categorical', wide=True, deep=True))
    for t in self.timestamps:
      for part in t.parts:
        out.append(
            TransformedFeature(
                t.part_name(part), 'categorical', wide=True, deep=True))
        if t.cyclical:
          for suffix in (SIN_SUFFIX, COS_SUFFIX):
            out.append(
                TransformedFeature(
                    t.part_name(part) + suffix,
                    'numeric',
                    wide=False,
                    deep=True))
    for x in self.texts:
      out.append(
          TransformedFeature(
              x.name,
              'categorical',
              wide=True,
              deep=True,
              embedding_dim=x.embedding_dim,
              multivalent=True))
    for cross in self.crosses:
      out.append(
          TransformedFeature(cross.name, 'categorical', wide=True, deep=False))
    return out


# ----------------------------------------------------------------- validation


def _check_keys(section: Mapping[str, Any], allowed: Sequence[str],
                where: str) -> None:
  if not isinstance(section, Mapping):
    raise ConfigError(f'{where}: expected a mapping, got {section!r}')
  unknown = sorted(set(section) - set(allowed))
  if unknown:
    raise ConfigError(f'{where}: unknown key {unknown[0]!r}; allowed keys: '
                      f'{", ".join(sorted(allowed))}')


def _require(section: Mapping[str, Any], key: str, where: str) -> Any:
  if key not in section:
    raise ConfigError(f'{where}: missing required key {key!r}')
  return section[key]


def _choice(value: Any, allowed: Sequence[str], where: str) -> str:
  if value not in allowed:
    raise ConfigError(
        f'{where}: {value!r} is not allowed; choose one of {", ".join(allowed)}'
    )
  return value


def _int(value: Any,
         where: str,
         minimum: int = 0,
         maximum: int = MAX_SETTING) -> int:
  if (isinstance(value, bool) or not isinstance(value, int) or
      not minimum <= value <= maximum):
    raise ConfigError(f'{where}: expected an integer from {minimum} to '
                      f'{maximum}, got {_clip_repr(value)}')
  return value


def _clip_repr(value: Any, limit: int = 60) -> str:
  text = repr(value) if not isinstance(value, int) or abs(value) < 10**limit \
      else f'an integer of {len(str(abs(value)))} digits'
  return text if len(text) <= limit else text[:limit] + '...'


def _fraction(value: Any, where: str) -> float:
  if (isinstance(value, bool) or not isinstance(value, (int, float)) or
      not 0 <= value <= 1):
    raise ConfigError(f'{where}: expected a fraction from 0 to 1, got '
                      f'{_clip_repr(value)}')
  return float(value)


def _bool(value: Any, where: str) -> bool:
  if not isinstance(value, bool):
    raise ConfigError(f'{where}: expected true or false, got {value!r}')
  return value


def _str(value: Any, where: str) -> str:
  if not isinstance(value, str):
    raise ConfigError(f'{where}: expected a string, got {value!r}')
  return value


def _feature_name(item: Mapping[str, Any], where: str) -> str:
  """The required `name` of a column or window, usable as a feature name."""
  name = _str(_require(item, 'name', where), where + '.name')
  if not _NAME_RE.match(name):
    raise ConfigError(
        f'{where}.name: {name!r} is not a valid feature name (letters, '
        'digits and _; not starting with a digit)')
  return name


def _parse_csv(section: Mapping[str, Any]) -> CsvOptions:
  fields = {f.name for f in dataclasses.fields(CsvOptions)}
  _check_keys(section, sorted(fields), 'input.csv')
  opts = CsvOptions(**section)
  if len(_str(opts.delimiter, 'input.csv.delimiter')) != 1:
    raise ConfigError(
        f'input.csv.delimiter: expected one character, got {opts.delimiter!r} '
        '(use skip_initial_space: true for ", ")')
  if len(_str(opts.quote_char, 'input.csv.quote_char')) != 1:
    raise ConfigError(
        f'input.csv.quote_char: expected one character, got {opts.quote_char!r}'
    )
  _bool(opts.skip_initial_space, 'input.csv.skip_initial_space')
  _bool(opts.header, 'input.csv.header')
  if opts.comment_prefix is not None:
    _str(opts.comment_prefix, 'input.csv.comment_prefix')
  _int(opts.max_line_bytes, 'input.csv.max_line_bytes', 1)
  try:
    ''.encode(opts.encoding)
  except LookupError:
    raise ConfigError(
        f'input.csv.encoding: unknown encoding {opts.encoding!r}') from None
  return opts


def _parse_columns(items: Any) -> Tuple[Column, ...]:
  if not isinstance(items, list) or not items:
    raise ConfigError('columns: expected a non-empty list of {name, type}')
  columns, seen = [], set()
  for i, item in enumerate(items):
    where = f'columns[{i}]'
    _check_keys(item,
                ('name', 'type', 'values', 'list', 'separator', 'max_missing'),
                where)
    name = _feature_name(item, where)
    if name in seen:
      raise ConfigError(f'{where}.name: duplicate column {name!r}')
    seen.add(name)
    ctype = _choice(
        _require(item, 'type', where), COLUMN_TYPES, where + '.type')
    values = item.get('values')
    if values is not None:
      if not isinstance(values, list) or not values:
        raise ConfigError(f'{where}.values: expected a non-empty list')
      if ctype != 'string':
        raise ConfigError(f'{where}.values: allowed values apply to string '
                          f'columns, and {name!r} has type {ctype}')
      values = tuple(str(v) for v in values)
    is_list = _bool(item.get('list', False), where + '.list')
    if is_list and ctype != 'string':
      raise ConfigError(f'{where}.list: list-valued columns must have type '
                        f'string, and {name!r} has type {ctype}')
    separator = item.get('separator', DEFAULT_LIST_SEPARATOR)
    if 'separator' in item and not is_list:
      raise ConfigError(f'{where}.separator: only for list: true columns')
    if not isinstance(separator, str) or len(separator) != 1:
      raise ConfigError(f'{where}.separator: expected one character, got '
                        f'{separator!r}')
    max_missing = (
        _fraction(item['max_missing'], where + '.max_missing')
        if item.get('max_missing') is not None else None)
    columns.append(
        Column(
            name, ctype, values, is_list, separator, max_missing=max_missing))
  return tuple(columns)


def _column_ref(name: Any, columns: Mapping[str, Column], where: str) -> Column:
  if name not in columns:
    raise ConfigError(
        f'{where}: {name!r} is not a column of the data; columns are: '
        f'{", ".join(columns)}')
  return columns[name]


def _parse_label(section: Any, columns: Mapping[str, Column]) -> Label:
  _check_keys(
      section,
      ('column', 'classes', 'positive', 'aliases', 'task', 'log_target'),
      'label')
  column = _column_ref(
      _require(section, 'column', 'label'), columns, 'label.column')
  task = _choice(section.get('task', BINARY), TASKS, 'label.task')
  if column.is_list:
    raise ConfigError(f'label.column: {column.name!r} is list-valued; a label '
                      'has one value per row')
  if task == REGRESSION:
    if column.type not in NUMERIC_TYPES:
      raise ConfigError(f'label.column: {column.name!r} has type '
                        f'{column.type}; a regression label must be int or '
                        'float')
    for key in ('classes', 'positive', 'aliases'):
      if key in section:
        raise ConfigError(f'label.{key}: not used by a regression task')
    return Label(column.name, (), None, {}, task,
                 _bool(section.get('log_target', False), 'label.log_target'))
  if 'log_target' in section:
    raise ConfigError('label.log_target: only for task: regression')
  if column.type != 'string':
    raise ConfigError(f'label.column: {column.name!r} must have type string '
                      f'for a {task} task')
  classes = _require(section, 'classes', 'label')
  if not isinstance(classes, list):
    raise ConfigError(f'label.classes: expected a list, got {classes!r}')
  if task == BINARY and len(classes) != 2:
    raise ConfigError('label.classes: a binary task needs exactly two classes, '
                      f'got {classes!r}')
  if task == MULTICLASS and len(classes) < 3:
    raise ConfigError('label.classes: a multiclass task needs at least three '
                      f'classes (use task: binary for two), got {classes!r}')
  classes = tuple(str(c) for c in classes)
  if len(set(classes)) != len(classes):
    raise ConfigError(f'label.classes: duplicate class in {list(classes)}')
  if task == BINARY:
    positive = str(_require(section, 'positive', 'label'))
    if positive not in classes:
      raise ConfigError(f'label.positive: {positive!r} is not one of '
                        f'label.classes {list(classes)}')
  else:
    if 'positive' in section:
      raise ConfigError('label.positive: only for task: binary')
    positive = None
  aliases = section.get('aliases') or {}
  if not isinstance(aliases, Mapping):
    raise ConfigError('label.aliases: expected a mapping of raw value to class')
  for raw, target in aliases.items():
    if str(target) not in classes:
      raise ConfigError(
          f'label.aliases.{raw}: {target!r} is not one of label.classes '
          f'{list(classes)}')
  return Label(column.name, classes, positive, {
      str(k): str(v) for k, v in aliases.items()
  }, task)


def _categorical_options(opts: Mapping[str, Any], where: str) -> Dict[str, Any]:
  """Vocabulary or hashing options shared by string, list and text features."""
  hash_buckets = _int(opts.get('hash_buckets', 0), where + '.hash_buckets')
  top_k = opts.get('top_k')
  if top_k is not None:
    _int(top_k, where + '.top_k', 1)
  emb = opts.get('embedding_dim')
  if emb is not None:
    _int(emb, where + '.embedding_dim', 1)
  if hash_buckets and ('top_k' in opts or 'frequency_threshold' in opts):
    raise ConfigError(f'{where}: hash_buckets excludes top_k and '
                      'frequency_threshold (those apply to a vocabulary)')
  return dict(
      top_k=top_k,
      frequency_threshold=_int(
          opts.get('frequency_threshold', 0), where + '.frequency_threshold'),
      oov_buckets=_int(opts.get('oov_buckets', 1), where + '.oov_buckets', 1),
      hash_buckets=hash_buckets,
      embedding_dim=emb)


_CATEGORICAL_KEYS = ('top_k', 'frequency_threshold', 'oov_buckets',
                     'hash_buckets', 'embedding_dim')

_NUMERIC_KEYS = ('impute', 'log1p', 'scale', 'buckets')


def _numeric_feature(name: str, opts: Mapping[str, Any],
                     where: str) -> NumericFeature:
  f = NumericFeature(
      name,
      impute=_choice(
          opts.get('impute', 'mean'), IMPUTATIONS, where + '.impute'),
      log1p=_bool(opts.get('log1p', False), where + '.log1p'),
      scale=_choice(opts.get('scale', 'zscore'), SCALINGS, where + '.scale'),
      buckets=_int(opts.get('buckets', 0), where + '.buckets'))
  if f.buckets == 1:
    raise ConfigError(f'{where}.buckets: use 0 (no buckets) or at least 2')
  return f


@dataclasses.dataclass
class _Features:
  numeric: List[NumericFeature] = dataclasses.field(default_factory=list)
  categorical: List[CategoricalFeature] = dataclasses.field(
      default_factory=list)
  booleans: List[BoolFeature] = dataclasses.field(default_factory=list)
  timestamps: List[TimestampFeature] = dataclasses.field(default_factory=list)
  texts: List[TextFeature] = dataclasses.field(default_factory=list)


def _parse_features(section: Any, columns: Mapping[str, Column],
                    label: Label) -> _Features:
  if not isinstance(section, Mapping) or not section:
    raise ConfigError('features: expected a mapping of column name to options')
  out = _Features()
  for name, opts in section.items():
    where = f'features.{name}'
    column = _column_ref(name, columns, where)
    if name == label.column:
      raise ConfigError(f'{where}: the label column cannot also be a feature')
    opts = opts or {}  # noqa: PLW2901 - a feature without options
    if column.type in NUMERIC_TYPES:
      _check_keys(opts, _NUMERIC_KEYS, where)
      out.numeric.append(_numeric_feature(name, opts, where))
    elif column.type == 'bool':
      _check_keys(opts, (), where)
      out.booleans.append(BoolFeature(name))
    elif column.type == 'timestamp':
      _check_keys(opts, ('parts', 'cyclical'), where)
      parts = opts.get('parts', list(TIMESTAMP_PARTS))
      if not isinstance(parts, list) or not parts:
        raise ConfigError(f'{where}.parts: expected a non-empty list of '
                          f'{", ".join(TIMESTAMP_PARTS)}')
      for part in parts:
        _choice(part, tuple(TIMESTAMP_PARTS), where + '.parts')
      out.timestamps.append(
          TimestampFeature(
              name, tuple(parts),
              _bool(opts.get('cyclical', True), where + '.cyclical')))
    elif column.type == 'text':
      _check_keys(opts, _CATEGORICAL_KEYS + ('vocabulary',), where)
      vocabulary = _bool(opts.get('vocabulary', False), where + '.vocabulary')
      options = _categorical_options(opts, where)
      if vocabulary and options['hash_buckets']:
        raise ConfigError(f'{where}: vocabulary: true excludes hash_buckets')
      if not vocabulary and not options['hash_buckets']:
        options['hash_buckets'] = DEFAULT_TEXT_HASH_BUCKETS
      out.texts.append(TextFeature(name, vocabulary=vocabulary, **options))
    else:
      _check_keys(opts, _CATEGORICAL_KEYS, where)
      options = _categorical_options(opts, where)
      out.categorical.append(
          CategoricalFeature(
              name, vocabulary=options['hash_buckets'] == 0, **options))
  return out


def _parse_crosses(items: Any, crossable: Set[str]) -> Tuple[Cross, ...]:
  """Crosses of single-valued categorical outputs (ids of strings, numeric
  buckets, booleans, timestamp parts)."""
  if items is None:
    return ()
  if not isinstance(items, list):
    raise ConfigError('crosses: expected a list of {features, hash_buckets}')
  crosses, seen = [], set()
  for i, item in enumerate(items):
    where = f'crosses[{i}]'
    _check_keys(item, ('features', 'hash_buckets'), where)
    feats = _require(item, 'features', where)
    if not isinstance(feats, list) or len(feats) < 2:
      raise ConfigError(f'{where}.features: expected at least two features')
    for f in feats:
      if f not in crossable:
        raise ConfigError(
            f'{where}.features: {f!r} cannot be crossed; crossable features '
            'are single-valued categorical features, numeric buckets, '
            'booleans and timestamp parts: '
            f'{", ".join(sorted(crossable))}')
    cross = Cross(
        tuple(feats),
        _int(_require(item, 'hash_buckets', where), where + '.hash_buckets', 2))
    if cross.name in seen:
      raise ConfigError(f'{where}: duplicate cross {cross.name!r}')
    seen.add(cross.name)
    crosses.append(cross)
  return tuple(crosses)


_DURATION_RE = re.compile(r'^\s*([0-9]{1,15})\s*([smhdw])\s*$')
_WINDOW_KEYS = ('name', 'entity', 'timestamp', 'window', 'aggregate',
                'value') + _NUMERIC_KEYS


def parse_duration(value: Any, where: str) -> int:
  """Seconds of a duration: an integer of seconds, or a number and a unit
  (30m, 12h, 7d, 4w; s for seconds)."""
  if isinstance(value, int) and not isinstance(value, bool):
    seconds = value
  else:
    match = _DURATION_RE.match(value) if isinstance(value, str) else None
    if not match:
      raise ConfigError(
          f'{where}: {_clip_repr(value)} is not a duration; use a number of '
          'seconds or a number followed by one of s, m, h, d, w (e.g. 30m, '
          '12h, 7d, 4w)')
    seconds = int(match.group(1)) * DURATION_UNITS[match.group(2)]
  if seconds < 1:
    raise ConfigError(f'{where}: {_clip_repr(value)} is not a duration of at '
                      'least one second')
  if seconds > MAX_WINDOW_SECONDS:
    raise ConfigError(f'{where}: {_clip_repr(value)} is longer than '
                      f'{MAX_WINDOW_SECONDS} seconds, the span of the years '
                      'a timestamp holds (1 to 9999)')
  return seconds


def _parse_windows(
    items: Any, columns: Mapping[str, Column], label: Label
) -> Tuple[Tuple[WindowFeature, ...], Tuple[Column, ...], Tuple[NumericFeature,
                                                                ...]]:
  """`windows:` -> (window specs, their derived columns, their numeric
  features)."""
  if items is None:
    return (), (), ()
  if not isinstance(items, list):
    raise ConfigError('windows: expected a list of {name, entity, timestamp, '
                      'window, aggregate, value}')
  if items and HISTORY_FIELD in columns:
    raise ConfigError(f'windows: a column is named {HISTORY_FIELD!r}, the '
                      'field in which serving requests send window history; '
                      'rename the column')
  windows, derived, numeric, seen = [], [], [], set()
  for i, item in enumerate(items):
    where = f'windows[{i}]'
    _check_keys(item, _WINDOW_KEYS, where)
    name = _feature_name(item, where)
    if name in columns:
      raise ConfigError(f'{where}.name: {name!r} is already a column of the '
                        'data; a window needs a name of its own')
    if name in seen:
      raise ConfigError(f'{where}.name: duplicate window {name!r}')
    seen.add(name)

    def ref(key: str,
            types: Sequence[str],
            what: str,
            item: Any = item,
            where: str = where) -> str:
      column = _column_ref(
          _require(item, key, where), columns, f'{where}.{key}')
      if column.name == label.column:
        raise ConfigError(f'{where}.{key}: {column.name!r} is the label, '
                          'which serving does not have')
      if column.type not in types or column.is_list:
        raise ConfigError(
            f'{where}.{key}: {column.name!r} has type {column.type}'
            f'{" (list)" if column.is_list else ""}; {what} must be a '
            f'single-valued column of type {" or ".join(types)}')
      return column.name

    entity = ref('entity', ENTITY_TYPES, 'an entity')
    timestamp = ref('timestamp', ('timestamp',), 'the timestamp')
    window = _require(item, 'window', where)
    seconds = parse_duration(window, where + '.window')
    aggregate = _choice(
        _require(item, 'aggregate', where), AGGREGATES, where + '.aggregate')
    value = None
    if aggregate == 'count':
      if 'value' in item:
        raise ConfigError(f'{where}.value: not used by aggregate count, which '
                          'counts rows; leave it out')
    else:
      if 'value' not in item:
        raise ConfigError(f'{where}: missing required key \'value\' (the '
                          f'numeric column to {aggregate}); aggregate count '
                          'is the only one without a value')
      value = ref('value', NUMERIC_TYPES, 'a value')
    windows.append(
        WindowFeature(name, entity, timestamp, seconds, aggregate, value,
                      str(window)))
    derived.append(Column(name, 'float', derived=True))
    numeric.append(_numeric_feature(name, item, where))
  return tuple(windows), tuple(derived), tuple(numeric)


def _parse_split(section: Any) -> SplitConfig:
  _check_keys(section, ('ratios', 'seed', 'stratify'), 'split')
  ratios = _require(section, 'ratios', 'split')
  _check_keys(ratios, SPLIT_NAMES, 'split.ratios')
  for k in ('train', 'eval'):
    _require(ratios, k, 'split.ratios')
  parsed = {}
  for k, v in ratios.items():
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
      raise ConfigError(
          f'split.ratios.{k}: expected a fraction >= 0, got {v!r}')
    parsed[k] = float(v)
  if abs(sum(parsed.values()) - 1.0) > 1e-6:
    raise ConfigError(
        f'split.ratios: fractions must add up to 1, got {sum(parsed.values())}')
  if parsed['train'] <= 0:
    raise ConfigError('split.ratios.train: must be > 0')
  return SplitConfig(
      ratios=parsed,
      seed=_int(section.get('seed', 42), 'split.seed'),
      stratify=_bool(section.get('stratify', True), 'split.stratify'))


_TOP_LEVEL = ('name', 'input', 'columns', 'label', 'features', 'crosses',
              'split', 'model', 'tfdv_schema', 'windows', 'validation')

_RULE_KEYS = {
    'min': 'minimum',
    'max': 'maximum',
    'max_decrease': 'max_decrease',
    'max_increase': 'max_increase'
}
_VALIDATION_KEYS = ('false_alarm_rate', 'metrics', 'slices',
                    'allow_signature_change', 'latency')


def _number(value: Any, where: str, minimum: Optional[float] = None) -> float:
  if (isinstance(value, bool) or not isinstance(value, (int, float)) or
      value != value or value in (float('inf'), float('-inf')) or
      (minimum is not None and value < minimum)):
    floor = f' of at least {minimum:g}' if minimum is not None else ''
    raise ConfigError(f'{where}: expected a finite number{floor}, got '
                      f'{_clip_repr(value)}')
  return float(value)


def _parse_rules(section: Any, where: str,
                 keys: Sequence[str]) -> Tuple[MetricRule, ...]:
  """{metric: {min, max, max_decrease, max_increase}} -> rules. Metric names
  are checked against the model's head when a model is validated: the
  metrics a model reports depend on its label task."""
  if section is None:
    return ()
  if not isinstance(section, Mapping) or not section:
    raise ConfigError(f'{where}: expected a mapping of metric name to '
                      f'{{{", ".join(keys)}}}, e.g. roc_auc: {{min: 0.9}}')
  rules = []
  for metric, limits in section.items():
    at = f'{where}.{metric}'
    if not isinstance(metric, str) or not _NAME_RE.match(metric):
      raise ConfigError(f'{where}: {metric!r} is not a metric name')
    if not isinstance(limits, Mapping) or not limits:
      raise ConfigError(f'{at}: expected a mapping with one or more of '
                        f'{", ".join(keys)}, got {_clip_repr(limits)}')
    _check_keys(limits, keys, at)
    values = {}
    for key, value in limits.items():
      change = key.startswith('max_')
      values[_RULE_KEYS[key]] = _number(value, f'{at}.{key}',
                                        0.0 if change else None)
    rule = MetricRule(metric, **values)
    if (rule.minimum is not None and rule.maximum is not None and
        rule.minimum > rule.maximum):
      raise ConfigError(f'{at}: min {rule.minimum:g} is above max '
                        f'{rule.maximum:g}; no model could pass')
    rules.append(rule)
  return tuple(rules)


def _parse_validation(section: Any,
                      sliceable: Sequence[str]) -> Tuple[float, Blessing]:
  """The false-alarm rate of drift and skew checks (0 to 0.5), and the
  rules a model must meet to be pushed. `sliceable`: the raw columns a
  slice may be cut by."""
  if section is None:
    return 0.01, Blessing()
  if not isinstance(section, Mapping):
    raise ConfigError('validation: expected a mapping')
  _check_keys(section, _VALIDATION_KEYS, 'validation')
  rate = section.get('false_alarm_rate', 0.01)
  if (isinstance(rate, bool) or not isinstance(rate, (int, float)) or
      not 0 < rate <= 0.5):
    raise ConfigError('validation.false_alarm_rate: expected a probability '
                      f'above 0 and at most 0.5, got {_clip_repr(rate)}')
  defaults = Blessing()
  metrics = _parse_rules(
      section.get('metrics'), 'validation.metrics', tuple(_RULE_KEYS))
  slices = section.get('slices') or {}
  _check_keys(slices, ('columns', 'buckets', 'min_rows', 'metrics'),
              'validation.slices')
  columns = slices.get('columns', [])
  if not isinstance(columns, list):
    raise ConfigError('validation.slices.columns: expected a list of raw '
                      f'feature columns, got {_clip_repr(columns)}')
  for name in columns:
    if name not in sliceable:
      raise ConfigError(
          f'validation.slices.columns: {name!r} cannot slice the metrics; '
          'use single-valued raw feature columns of the data: '
          f'{", ".join(sliceable)}')
  if len(set(columns)) != len(columns):
    raise ConfigError('validation.slices.columns: a column is listed twice')
  slice_metrics = _parse_rules(
      slices.get('metrics'), 'validation.slices.metrics',
      ('max_decrease', 'max_increase'))
  if columns and not slice_metrics:
    raise ConfigError('validation.slices: columns are given but no metrics; '
                      'add e.g. metrics: {roc_auc: {max_decrease: 0.02}}')
  latency = section.get('latency') or {}
  _check_keys(latency, ('batch_rows', 'max_ms'), 'validation.latency')
  blessing = Blessing(
      metrics=metrics,
      slice_columns=tuple(columns),
      slice_buckets=_int(
          slices.get('buckets', defaults.slice_buckets),
          'validation.slices.buckets', 2, 100),
      slice_min_rows=_int(
          slices.get('min_rows', defaults.slice_min_rows),
          'validation.slices.min_rows', 1),
      slice_metrics=slice_metrics,
      allow_signature_change=_bool(
          section.get('allow_signature_change', False),
          'validation.allow_signature_change'),
      latency_batch_rows=_int(
          latency.get('batch_rows', defaults.latency_batch_rows),
          'validation.latency.batch_rows', 1, 100000),
      max_latency_ms=_number(
          latency.get('max_ms', defaults.max_latency_ms),
          'validation.latency.max_ms', 0.001))
  return float(rate), blessing


def parse_config(text: str, where: str = '<config>') -> DatasetConfig:
  """Parses and validates a dataset config from YAML text."""
  try:
    raw = yaml.safe_load(text)
  except yaml.YAMLError as e:
    raise ConfigError(f'{where}: not valid YAML: {_yaml_error(e)}') from None
  if not isinstance(raw, Mapping):
    raise ConfigError(f'{where}: expected a YAML mapping at the top level')
  _check_keys(raw, _TOP_LEVEL, 'config')
  name = _str(_require(raw, 'name', 'config'), 'name')
  inp = _require(raw, 'input', 'config')
  _check_keys(inp, ('format', 'csv', 'missing_values', 'missing_category'),
              'input')
  fmt = _choice(_require(inp, 'format', 'input'), INPUT_FORMATS, 'input.format')
  csv_opts = _parse_csv(inp.get('csv') or {})
  missing = inp.get('missing_values', ['?', ''])
  if not isinstance(missing, list):
    raise ConfigError('input.missing_values: expected a list of strings')
  missing = tuple(str(m) for m in missing)
  if '' not in missing:
    missing = missing + ('',)
  missing_category = _str(
      inp.get('missing_category', '__missing__'), 'input.missing_category')
  columns = _parse_columns(_require(raw, 'columns', 'config'))
  by_name = {c.name: c for c in columns}
  label = _parse_label(_require(raw, 'label', 'config'), by_name)
  feats = _parse_features(_require(raw, 'features', 'config'), by_name, label)
  windows, derived, window_numeric = _parse_windows(
      raw.get('windows'), by_name, label)
  columns = columns + derived
  feats.numeric.extend(window_numeric)
  # Outputs before crosses: what a cross may use, and what names are taken.
  partial = DatasetConfig(
      name=name,
      format=fmt,
      csv=csv_opts,
      missing_values=(),
      missing_category='',
      columns=columns,
      label=label,
      numeric=tuple(feats.numeric),
      categorical=tuple(feats.categorical),
      crosses=(),
      split=SplitConfig({}),
      model={},
      booleans=tuple(feats.booleans),
      timestamps=tuple(feats.timestamps),
      texts=tuple(feats.texts),
      windows=windows)
  outputs = partial.transformed_features()
  crosses = _parse_crosses(
      raw.get('crosses'), {
          f.name
          for f in outputs
          if f.kind == 'categorical' and not f.multivalent
      })
  names = set()
  for n in [f.name for f in outputs] + [c.name for c in crosses]:
    if n in names or n == label.column:
      raise ConfigError(f'features: transformed feature name {n!r} collides '
                        'with another output or the label; rename a column')
    names.add(n)
  split = _parse_split(_require(raw, 'split', 'config'))
  if not label.is_classification:
    if raw['split'].get('stratify') is True:
      raise ConfigError('split.stratify: stratification needs a classification '
                        'label; a regression split is by hash alone')
    split = dataclasses.replace(split, stratify=False)
  model = raw.get('model') or {}
  if not isinstance(model, Mapping):
    raise ConfigError('model: expected a mapping')
  tfdv_schema = raw.get('tfdv_schema')
  if tfdv_schema is not None and not (isinstance(tfdv_schema, str) and
                                      tfdv_schema.strip()):
    raise ConfigError('tfdv_schema: expected the path of a TFDV schema '
                      f'(.pbtxt), got {tfdv_schema!r}')
  # Slices are cut by raw values a scored row carries itself: one value,
  # read from the data (not computed by a window, not a bag of tokens).
  sliceable = [
      c.name
      for c in partial.feature_columns
      if not (c.derived or c.is_list or c.type == 'text')
  ]
  false_alarm_rate, blessing = _parse_validation(
      raw.get('validation'), sliceable)
  return DatasetConfig(
      name=name,
      format=fmt,
      csv=csv_opts,
      missing_values=missing,
      missing_category=missing_category,
      columns=columns,
      label=label,
      numeric=tuple(feats.numeric),
      categorical=tuple(feats.categorical),
      crosses=crosses,
      split=split,
      model=dict(model),
      tfdv_schema=tfdv_schema,
      booleans=tuple(feats.booleans),
      timestamps=tuple(feats.timestamps),
      texts=tuple(feats.texts),
      windows=windows,
      false_alarm_rate=false_alarm_rate,
      blessing=blessing,
      source_text=text)


def _yaml_error(error: yaml.YAMLError) -> str:
  """PyYAML's several-line message as one line: what, where, and what it
  was parsing."""
  problem = getattr(error, 'problem', None)
  mark = getattr(error, 'problem_mark', None)
  if not problem:
    return ' '.join(str(error).split())
  text = problem
  if mark is not None:
    text += f' at line {mark.line + 1}, column {mark.column + 1}'
  context = getattr(error, 'context', None)
  context_mark = getattr(error, 'context_mark', None)
  if context:
    text += f' ({context}'
    if context_mark is not None:
      text += (f' started at line {context_mark.line + 1}, column '
               f'{context_mark.column + 1}')
    text += ')'
  return ' '.join(text.split())


def load_config(path: str) -> DatasetConfig:
  """Loads a config from a local path or any filesystem TensorFlow reads
  (gs://...)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      text = f.read().decode('utf-8')
  except Exception as e:  # noqa: BLE001 - any filesystem's error is the user's to fix
    raise ConfigError(f'cannot read config {path}: {e}') from None
  return parse_config(text, where=path)
