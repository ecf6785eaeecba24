"""Request checking: every body is validated before it reaches the model.

Why in Python and not left to the graph: a bad value that reaches TensorFlow
either fails deep inside an op (a 500 that names a tensor, not the field the
client got wrong) or, worse, does not fail at all: a string "12" for an int
feature, an extra key silently ignored, or a NaN the transform graph would
quietly impute. So each value is checked against the raw feature types of the
model's own dataset config (the export carries it), and a problem becomes a
400 whose message names the instance and the feature.

What a valid request holds, per instance: every raw feature of the model
(the label excluded) and nothing else; an int feature takes a JSON integer
(or a number with no fraction), a float feature any finite number, a string
feature a string. Columns with several spellings go through core.values,
the module that normalises them for training too: a bool as true/false, 1/0
or yes/no, a timestamp as epoch seconds or an ISO-8601 date-time, a list
column as a JSON list of strings or one string joined by its separator. JSON
null is a missing value, which the transform graph imputes exactly as it does
for training rows. NaN and Infinity (which Python's
json module, like TF Serving's, would otherwise accept) are refused: a client
that means "missing" says null.

Window features (the config's `windows:`, pipeline/windows.py) are the one
exception to "every raw feature": a window's column may be left out, and is
then computed, with the function the Beam job uses, from the instance and an
optional "history" field: the earlier events of the instance's entity, in
the instance's own raw format,
    "history": [{"<timestamp column>": ..., "<value column>": ...}, ...]
Each event carries the timestamp and value columns the windows read (null
for a missing value) and may carry their entity columns (an event whose
entity differs from the instance's is not in that window). Without history
the window holds the instance alone, as for an entity's first row in
training. A window's column sent explicitly is used as it is (null:
missing, imputed). A malformed history is a 400 naming the event and field.

The output is a list of rows, {feature: value or None} with Python values of
the feature's type, plus the instances as they were received, for the request
log; with windows, the logged instance holds the window values the model got
instead of the history.
"""

import dataclasses
import json
from typing import (
    Any,
    Collection,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
)

from core import features as raw_features
from core import values as raw_values
from core import windows as window_lib
from core.config import DatasetConfig
from core.config import HISTORY_FIELD

_CLIP = 60
_KINDS = {'int64': 'int', 'float32': 'float', 'string': 'string'}


class RequestError(Exception):
  """A client error, answered with `status` and {"error": message}; with
  close=True the connection is closed after the answer (its request stream
  is unusable)."""

  def __init__(self, message: str, status: int = 400, close: bool = False):
    super().__init__(message)
    self.message = message
    self.status = status
    self.close = close


class NonFinite:
  """What json.loads makes of the NaN / Infinity / -Infinity tokens.

  A marker instead of a float so that the error can name the feature that
  carried it, which a parse-time error could not.
  """
  __slots__ = ('token',)

  def __init__(self, token: str):
    self.token = token


def parse_json(body: bytes) -> Any:
  """The request body as JSON; RequestError if it is not JSON."""
  try:
    return json.loads(body, parse_constant=NonFinite)
  except RecursionError:
    raise RequestError('request body is not usable JSON: nested too '
                       'deeply') from None
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, int limits
    raise RequestError(f'request body is not valid JSON: {e}') from None


def _clip(text: str) -> str:
  return text if len(text) <= _CLIP else text[:_CLIP] + '...'


def describe(value: Any) -> str:
  """A JSON value as a client would recognise it in an error message."""
  if isinstance(value, NonFinite):
    return value.token
  return raw_values.describe(value)


def _type_name(value: Any) -> str:
  if isinstance(value, list):
    return 'a list'
  if isinstance(value, dict):
    return 'an object'
  return describe(value)


@dataclasses.dataclass
class Rows:
  """Checked instances: typed rows for the model, received ones for the log."""
  rows: List[Dict[str, Any]]
  received: List[Dict[str, Any]]
  signature_name: Optional[str]
  columnar: bool = False

  def __len__(self) -> int:
    return len(self.rows)


class RowSchema:
  """The raw features one model takes, and the checks on their values.

  Built from the export's dataset config, so it always matches the model it
  belongs to; a hot-swapped version with other features brings its own.
  """

  def __init__(self, config: DatasetConfig):
    spec = raw_features.raw_feature_spec(config, include_label=False)
    # What the signatures take, from the spec's dtypes: int64, float32 and
    # string, whatever the config calls the column's type.
    self.kinds: Dict[str, str] = {
        name: _KINDS[s.dtype.name] for name, s in spec.items()
    }
    self.names: List[str] = list(spec)
    columns = {c.name: c for c in config.columns}
    # Columns with several spellings (bool, timestamp) are normalised by
    # core.values, as the Beam job's cleanse stage does; list columns
    # carry a list of strings per row.
    self.types: Dict[str, str] = {n: columns[n].type for n in self.names}
    self.lists: Dict[str, str] = {
        n: getattr(columns[n], 'separator', '|')
        for n in self.names
        if getattr(columns[n], 'is_list', False)
    }
    self.label: str = config.label.column
    self._name_set = frozenset(self.names)
    # JSON values checked and normalised exactly as the Beam job's cleanse
    # stage reads training rows (core.values); a string outside a column's
    # `values:` list is left to the vocabulary's out-of-vocabulary bucket.
    self._parsers = {
        n: raw_values.value_parser(columns[n], json=True, check_allowed=False)
        for n in self.names
    }
    # tf.Example and tensor values (gRPC) are read as the Beam job reads
    # tf.Examples: the same parsers, on native values instead of JSON.
    self._native_parsers = {
        n: raw_values.value_parser(columns[n], check_allowed=False)
        for n in self.names
    }
    # Window columns: optional in a request, computed when left out.
    self.windows = tuple(config.windows)
    self.derived = frozenset(w.name for w in self.windows)
    self._history_keys = tuple(
        dict.fromkeys(
            n for w in self.windows for n in (w.entity, w.timestamp, w.value)
            if n))
    self._history_required = tuple(
        dict.fromkeys(
            n for w in self.windows for n in (w.timestamp, w.value) if n))

  def is_extra(self, key: Any) -> bool:
    """A key of an instance that is not a feature but is allowed."""
    return bool(self.windows) and key == HISTORY_FIELD

  # ------------------------------------------------------------ one value

  def value(self, name: str, value: Any, where: str) -> Any:
    """The typed value of feature `name`, None when missing."""
    if value is None:
      return None
    kind = self.kinds[name]
    if isinstance(value, NonFinite):
      raise RequestError(f'{where}: feature {name!r}: {value.token} is not '
                         'allowed; send null for a missing value')
    if isinstance(value, (list, dict)) and name not in self.lists:
      hint = (' (binary values are not supported: every raw feature is a '
              'number or text)'
              if isinstance(value, dict) and 'b64' in value else '')
      raise RequestError(f'{where}: feature {name!r}: expected one {kind} '
                         f'value, got {describe(value)}{hint}')
    try:
      return self._parsers[name](value)
    except raw_values.RowError as e:
      raise RequestError(f'{where}: feature {name!r}: {e.problem}') from None

  def native_value(self, name: str, value: Any, where: str) -> Any:
    """The typed value of feature `name` from a tf.Example or tensor value
    (an int, a float, bytes, or a list of bytes for a list column), None
    when missing; the same checks and messages as for a JSON value."""
    if value is None:
      return None
    try:
      return self._native_parsers[name](value)
    except raw_values.RowError as e:
      raise RequestError(f'{where}: feature {name!r}: {e.problem}') from None

  # -------------------------------------------------------------- one row

  def check_keys(self, keys: Iterable[Any], where: str) -> None:
    """Every feature present, nothing else; the message names the key."""
    for key in keys:
      if key not in self._name_set and not self.is_extra(key):
        raise RequestError(f'{where}: {self.unknown(key)}')
    for name in self.names:
      if name not in keys and name not in self.derived:
        raise RequestError(f'{where}: missing feature {name!r} (send null '
                           'for a missing value)')

  def unknown(self, key: Any) -> str:
    if key == self.label:
      return (f'{key!r} is the label, which the model predicts; leave it '
              'out')
    return (f'unknown feature {_clip(str(key))!r}; the model\'s features are '
            f'{", ".join(self.names)}')

  def row(self, obj: Any, where: str, lists: bool = False) -> Dict[str, Any]:
    """An instance object -> typed row.

    With lists=True (tf.Example-style classify requests) a feature may also
    be a list of at most one value; [] is missing, as in a tf.Example.
    """
    if not isinstance(obj, dict):
      raise RequestError(f'{where}: expected an object of raw features '
                         f'{{"feature": value, ...}}, got {_type_name(obj)}')
    self.check_keys(obj, where)
    row = {}
    for name in self.names:
      if name not in obj:
        continue  # a window column left out: computed below
      value = obj[name]
      if lists and isinstance(value, list) and name not in self.lists:
        if len(value) > 1:
          raise RequestError(f'{where}: feature {name!r}: expected at most '
                             f'one value, got a list of {len(value)}')
        value = value[0] if value else None
      row[name] = self.value(name, value, where)
    if self.windows:
      self.fill_windows(row, obj.get(HISTORY_FIELD), where)
    return row

  # -------------------------------------------------------------- windows

  def fill_windows(self, row: Dict[str, Any], history: Any, where: str) -> None:
    """Computes each window column the row lacks from `history` (the
    instance's "history" field) plus the row itself."""
    todo = [w for w in self.windows if w.name not in row]
    events = self._history(history, f'{where}: {HISTORY_FIELD}')
    for w in todo:
      entity = row.get(w.entity)
      if entity is None:
        row[w.name] = None  # no entity: no window, as in training
        continue
      mine = [e for e in events if e.get(w.entity, entity) == entity]
      row[w.name] = window_lib.window_value(
          w, [e[w.timestamp] for e in mine],
          [e[w.value] for e in mine] if w.value else None, row.get(w.timestamp),
          row.get(w.value) if w.value else None)

  def _history(self, history: Any, where: str) -> List[Dict[str, Any]]:
    if history is None:
      return []
    if not isinstance(history, list):
      raise RequestError(f'{where}: expected a list of earlier events '
                         f'{{{", ".join(repr(k) for k in self._history_keys)}'
                         f': ...}}, got {_type_name(history)}')
    events = []
    for j, event in enumerate(history):
      here = f'{where}[{j}]'
      if not isinstance(event, dict):
        raise RequestError(f'{here}: expected an object with '
                           f'{", ".join(repr(k) for k in self._history_keys)}'
                           f', got {_type_name(event)}')
      for key in event:
        if key not in self._history_keys:
          raise RequestError(
              f'{here}: unknown field {_clip(str(key))!r}; a history event '
              f'has {", ".join(repr(k) for k in self._history_keys)}')
      for key in self._history_required:
        if key not in event:
          raise RequestError(f'{here}: missing field {key!r} (send null for '
                             'a missing value)')
      events.append({k: self.value(k, v, here) for k, v in event.items()})
    return events

  def logged(self, instance: Any, row: Dict[str, Any]) -> Any:
    """The instance as the request log keeps it: as received, except that
    window values the server computed replace the history they came from
    (so the skew check sees what the model got)."""
    if not self.windows or not isinstance(instance, dict):
      return instance
    out = {k: v for k, v in instance.items() if k != HISTORY_FIELD}
    for w in self.windows:
      if w.name not in out:
        out[w.name] = row.get(w.name)
    return out


# ------------------------------------------------------------------ requests


def _check_top_keys(obj: Any, allowed: Sequence[str], verb: str) -> None:
  if not isinstance(obj, dict):
    raise RequestError(f'{verb} request: expected a JSON object, got '
                       f'{_type_name(obj)}')
  for key in obj:
    if key not in allowed:
      raise RequestError(f'{verb} request: unknown key {_clip(str(key))!r}; '
                         f'expected {", ".join(allowed)}')
  name = obj.get('signature_name')
  if name is not None and not isinstance(name, str):
    raise RequestError(f'{verb} request: signature_name must be a string, '
                       f'got {_type_name(name)}')


def _check_count(n: int, what: str, max_instances: int) -> None:
  if n == 0:
    raise RequestError(f'{what} is empty: send at least one instance')
  if n > max_instances:
    raise RequestError(f'{what} has {n} instances; the limit is '
                       f'{max_instances} per request (--max-instances)')


def parse_predict(obj: Any, schema: RowSchema, max_instances: int) -> Rows:
  """A :predict body, row ("instances") or columnar ("inputs") format."""
  _check_top_keys(obj, ('signature_name', 'instances', 'inputs'), 'predict')
  has_rows, has_columns = 'instances' in obj, 'inputs' in obj
  if has_rows == has_columns:
    raise RequestError('predict request: send exactly one of "instances" '
                       '(row format) and "inputs" (columnar format)')
  signature = obj.get('signature_name')
  if has_rows:
    instances = obj['instances']
    if not isinstance(instances, list):
      raise RequestError('instances: expected a list of objects '
                         f'{{"feature": value, ...}}, got '
                         f'{_type_name(instances)}')
    _check_count(len(instances), 'instances', max_instances)
    rows = [
        schema.row(inst, f'instances[{i}]') for i, inst in enumerate(instances)
    ]
    received = ([
        schema.logged(inst, row) for inst, row in zip(instances, rows)
    ] if schema.windows else instances)
    return Rows(rows, received, signature)
  return _parse_columns(obj['inputs'], schema, max_instances, signature)


def _parse_columns(inputs: Any, schema: RowSchema, max_instances: int,
                   signature: Optional[str]) -> Rows:
  if not isinstance(inputs, dict):
    raise RequestError('inputs: expected an object {"feature": [values...], '
                       f'...}}, got {_type_name(inputs)}')
  schema.check_keys(inputs, 'inputs')
  n = None
  names = [name for name in schema.names if name in inputs]
  for name in names:
    column = inputs[name]
    if not isinstance(column, list):
      raise RequestError(f'inputs: feature {name!r}: expected a list with one '
                         f'value per instance, got {_type_name(column)}')
    if n is None:
      n = len(column)
      _check_count(n, f'inputs[{name!r}]', max_instances)
    elif len(column) != n:
      raise RequestError(f'inputs: feature {name!r} has {len(column)} values '
                         f'but {names[0]!r} has {n}; every feature '
                         'needs one value per instance')
  if n is None:
    raise RequestError('inputs: no feature has values; send one list of '
                       f'values per feature ({", ".join(schema.names)})')
  rows: List[Dict[str, Any]] = [{} for _ in range(n)]
  for name in names:
    for i, value in enumerate(inputs[name]):
      rows[i][name] = schema.value(name, value, f'inputs (instance {i})')
  received = [{name: inputs[name][i] for name in names} for i in range(n)]
  if schema.windows:
    # "history": one list of events (or null) per instance.
    history = inputs.get(HISTORY_FIELD)
    if history is not None and (not isinstance(history, list) or
                                len(history) != n):
      raise RequestError(
          f'inputs: {HISTORY_FIELD!r}: expected a list with '
          f'one list of events (or null) per instance, got '
          f'{_type_name(history)}' +
          (f' of {len(history)}' if isinstance(history, list) else ''))
    for i in range(n):
      schema.fill_windows(rows[i], history[i] if history else None,
                          f'inputs (instance {i})')
    received = [schema.logged(r, row) for r, row in zip(received, rows)]
  return Rows(rows, received, signature, columnar=True)


def parse_classify(obj: Any,
                   schema: RowSchema,
                   max_instances: int,
                   verb: str = 'classify') -> Rows:
  """A :classify or :regress body: tf.Example-style "examples" plus optional
  "context".

  As in TF Serving, "context" holds features common to every example and a
  feature may not be in both.
  """
  _check_top_keys(obj, ('signature_name', 'context', 'examples'), verb)
  if 'examples' not in obj:
    raise RequestError(f'{verb} request: "examples" is required')
  examples = obj['examples']
  if not isinstance(examples, list):
    raise RequestError('examples: expected a list of objects '
                       f'{{"feature": value, ...}}, got '
                       f'{_type_name(examples)}')
  context = obj.get('context') or {}
  if not isinstance(context, dict):
    raise RequestError('context: expected an object {"feature": value, ...}, '
                       f'got {_type_name(context)}')
  for key in context:
    if key not in schema.kinds and not schema.is_extra(key):
      raise RequestError(f'context: {schema.unknown(key)}')
  _check_count(len(examples), 'examples', max_instances)
  rows, received = [], []
  for i, example in enumerate(examples):
    where = f'examples[{i}]'
    if isinstance(example, dict):
      both = [k for k in example if k in context]
      if both:
        raise RequestError(f'{where}: feature {both[0]!r} is also in '
                           '"context"; a feature goes in one of the two')
      merged = dict(context)
      merged.update(example)
    else:
      merged = example
    rows.append(schema.row(merged, where, lists=True))
    received.append(schema.logged(merged, rows[-1]))
  return Rows(rows, received, obj.get('signature_name'))


def check_signature(name: Optional[str], default: str,
                    available: Collection[str]) -> str:
  if name is None or name == '':
    return default
  if name not in available:
    raise RequestError(f'signature_name {_clip(name)!r} is not a signature of '
                       f'this model; it has {", ".join(sorted(available))}')
  return name
