"""Raw values: the one parser for every way a value enters the system.

Values arrive as CSV text (the Beam job's cleanse stage, `trainer.predict`),
as Parquet or tf.Example values (the cleanse stage) and as JSON (the serving
requests). Each is checked against its column's type and normalised to the one
form the transform graph is trained on: int64 for int columns, float32-sized
floats, text, a list of strings for a list column, 0/1 for a bool and epoch
seconds (UTC) for a timestamp, whatever their spelling (`true`/`1`/`yes`;
ISO-8601 or epoch seconds). So training and serving agree on what a value
means, and what one of them refuses the others refuse too, for the same reason.

`value_parser(column)` takes text or native values (CSV, Parquet, tf.Example);
`value_parser(column, json=True)` takes JSON types strictly: a number column
takes a JSON number, a string column a JSON string (a client that sends "12"
for an int feature has a bug worth reporting).

Problems are `RowError`s: a stable reason code (the quarantine's `reason`, and
what the manifest counts) and a message meant for a person. Callers say where
(a file and line, a request instance); the message names the column.
"""

import datetime
import math
from typing import Any, Callable, Collection, List, Optional, TYPE_CHECKING

if TYPE_CHECKING:
  from core.config import Column  # pylint: disable=g-bad-import-order

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max

# Reason codes of rows and values that cannot be used: the quarantine's
# reasons, shared by everything that reads raw rows.
LINE_TOO_LONG = 'line_too_long'
MALFORMED_CSV = 'malformed_csv'
WRONG_ARITY = 'wrong_arity'
HEADER_MISMATCH = 'header_mismatch'
INVALID_ENCODING = 'invalid_encoding'
NOT_A_NUMBER = 'not_a_number'
NOT_AN_INTEGER = 'not_an_integer'
NON_FINITE = 'non_finite_number'
OUT_OF_RANGE = 'out_of_range'
NOT_ALLOWED = 'value_not_allowed'
WRONG_TYPE = 'wrong_type'
NOT_A_BOOLEAN = 'not_a_boolean'
NOT_A_TIMESTAMP = 'not_a_timestamp'

_TRUE = frozenset(('true', 't', 'yes', 'y', '1'))
_FALSE = frozenset(('false', 'f', 'no', 'n', '0'))
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
# Epoch seconds beyond year 9999 are not a date a person meant.
MAX_EPOCH_SECONDS = 253402300799
# What float() reads as infinity or NaN when it is spelled so, as opposed to
# a number too large for a double.
_NON_FINITE_WORDS = frozenset(('inf', 'infinity', 'nan'))
_CLIP = 80


class RowError(ValueError):
  """A value or a row that cannot be used.

  `reason`: a stable code (a quarantine reason); `problem`: what is wrong, in
  words; `column`: the column it is about, if any. `detail` is the two
  together, as the quarantine records it.
  """

  def __init__(self, reason: str, problem: str, column: Optional[str] = None):
    self.reason = reason
    self.problem = problem
    self.column = column
    super().__init__(self.detail)

  @property
  def detail(self) -> str:
    return f'{self.column}: {self.problem}' if self.column else self.problem


class OutOfRange(ValueError):
  """A well-formed value beyond what its type can carry."""


# ------------------------------------------------------------ spelled values


def parse_bool(value: Any) -> int:
  """1 or 0 from a bool, 0/1 number or a true/false word (any case)."""
  if isinstance(value, bool):
    return int(value)
  if isinstance(value, (int, float)):
    if value in (0, 1):
      return int(value)
    raise ValueError(f'{value!r} is not a boolean (expected true/false or 1/0)')
  text = _text(value).strip().lower()
  if text in _TRUE:
    return 1
  if text in _FALSE:
    return 0
  raise ValueError(f'{clip(text)!r} is not a boolean (expected true/false, '
                   'yes/no or 1/0)')


def parse_timestamp(value: Any) -> int:
  """Seconds since 1970-01-01T00:00:00Z.

  Accepts epoch seconds (a number, or digits in a string) and ISO-8601 dates
  and date-times ('2024-05-01', '2024-05-01 13:45', '2024-05-01T13:45:10Z',
  '2024-05-01T13:45:10+02:00', fractions of a second). A date-time without an
  offset is taken as UTC. OutOfRange beyond years 1 to 9999.
  """
  if isinstance(value, bool):
    raise ValueError(f'{value!r} is not a timestamp')
  if isinstance(value, (int, float)):
    return _epoch(value)
  text = _text(value).strip()
  try:
    seconds = float(text)
  except ValueError:
    pass
  else:
    if math.isnan(seconds) or (math.isinf(seconds) and
                               _spelled_non_finite(text)):
      raise ValueError(f'{clip(text)!r} is not a timestamp (expected '
                       'ISO-8601 or epoch seconds)')
    return _epoch(seconds, text)
  iso = text[:-1] + '+00:00' if text[-1:] in ('Z', 'z') else text
  try:
    moment = datetime.datetime.fromisoformat(iso)
  except ValueError:
    raise ValueError(f'{clip(text)!r} is not a timestamp (expected ISO-8601, '
                     'e.g. 2024-05-01T13:45:00Z, or epoch seconds)') from None
  if moment.tzinfo is None:
    moment = moment.replace(tzinfo=datetime.timezone.utc)
  # An offset can move 0001-01-01 or 9999-12-31 past the years a date holds.
  return _epoch(math.floor((moment - _EPOCH).total_seconds()), text)


def split_list(text: str, separator: str) -> List[str]:
  """The items of a list field, stripped; empty items dropped."""
  return [item.strip() for item in text.split(separator) if item.strip()]


def _epoch(seconds: float, text: Any = None) -> int:
  """Whole epoch seconds, within years 1 to 9999."""
  if isinstance(seconds, float) and not math.isfinite(seconds):
    raise ValueError(f'{seconds!r} is not a timestamp')
  # Compared before any conversion: an int may be too large for a float.
  if not -MAX_EPOCH_SECONDS <= seconds <= MAX_EPOCH_SECONDS:
    shown = clip(str(seconds if text is None else text))
    raise OutOfRange(f'{shown} is out of range for a timestamp (epoch '
                     f'seconds up to {MAX_EPOCH_SECONDS}, year 9999)')
  return math.floor(seconds)


def _text(value: Any) -> str:
  if isinstance(value, bytes):
    return value.decode('utf-8')
  if isinstance(value, str):
    return value
  raise ValueError(f'expected text, got {type(value).__name__} {value!r}')


# ----------------------------------------------------------------- messages


def clip(text: str, limit: int = _CLIP) -> str:
  return text if len(text) <= limit else text[:limit] + '...'


def shown(value: Any) -> str:
  """A value for a message, clipped; also an int too long to print."""
  try:
    return clip(str(value))
  except ValueError:  # more digits than str() writes
    return f'an integer of {value.bit_length()} bits'


def describe(value: Any) -> str:
  """A JSON value as a client would recognise it in an error message."""
  if value is None:
    return 'null'
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, str):
    return f'the string {clip(value, 60)!r}'
  if isinstance(value, int):
    return f'the integer {clip(shown(value), 60)}'
  if isinstance(value, float):
    return f'the number {value!r}'
  if isinstance(value, list):
    return f'a list of {len(value)} values'
  if isinstance(value, dict):
    if 'b64' in value:
      return 'a {"b64": ...} binary value'
    return 'an object'
  return type(value).__name__


def _spelled_non_finite(text: str) -> bool:
  """Whether float() reads `text` as inf or nan because it says so, rather
  than because the number is too large."""
  return text.strip().lstrip('+-').lower() in _NON_FINITE_WORDS


# ------------------------------------------------------------------- parsing

Parser = Callable[[Any], Any]


def value_parser(column: 'Column',
                 *,
                 json: bool = False,
                 check_allowed: bool = True) -> Parser:
  """The parser of one column's values; raises RowError.

  `column` is a core.config.Column. With json=True values are JSON types,
  checked strictly (see the module docstring); otherwise text (CSV) or the
  native values of Parquet and tf.Example. `check_allowed`: refuse a string
  outside the column's `values:` list (the Beam job does; serving leaves
  unknown values to the vocabulary's out-of-vocabulary bucket).
  """
  name = column.name
  allowed = column.allowed_values if check_allowed else ()
  if column.is_list:
    return _list_parser(name, column.separator, allowed, json)
  if column.type == 'bool':
    return _spelled_parser(name, parse_bool, NOT_A_BOOLEAN, json)
  if column.type == 'timestamp':
    return _spelled_parser(name, parse_timestamp, NOT_A_TIMESTAMP, json)
  if column.raw_type == 'int':
    return _int_parser(name, json)
  if column.raw_type == 'float':
    return _float_parser(name, json)
  return _string_parser(name, allowed, json)


def _as_text(value: Any, name: str) -> str:
  if isinstance(value, bytes):
    try:
      return value.decode('utf-8')
    except UnicodeDecodeError:
      raise RowError(INVALID_ENCODING, 'value is not valid UTF-8',
                     name) from None
  if isinstance(value, str):
    return value
  raise RowError(
      WRONG_TYPE, f'expected text, got {type(value).__name__} '
      f'{shown(value)}', name)


def _json_string(value: Any, name: str, expected: str = 'a string') -> str:
  if not isinstance(value, str):
    raise RowError(WRONG_TYPE, f'expected {expected}, got {describe(value)}',
                   name)
  try:
    value.encode('utf-8')
  except UnicodeEncodeError:
    raise RowError(INVALID_ENCODING, 'the string is not valid Unicode '
                   '(unpaired surrogate)', name) from None
  return value


def _in_int64(number: int, name: str, text: Any) -> int:
  if not INT64_MIN <= number <= INT64_MAX:
    raise RowError(OUT_OF_RANGE, f'{shown(text)} does not fit in a 64-bit '
                   'integer', name)
  return number


def _whole(number: float, name: str, text: Any, label: str) -> int:
  """A finite float with no fraction, as an int64; `label` shows the value
  as received."""
  if not math.isfinite(number):
    raise RowError(NON_FINITE, f'{label} is not finite', name)
  if not number.is_integer():
    raise RowError(NOT_AN_INTEGER, f'{label} is not an integer (it has a '
                   'fraction)', name)
  return _in_int64(int(number), name, text)


def _int_parser(name: str, json: bool) -> Parser:

  def parse(value: Any) -> int:
    if isinstance(value, bool) or (json and not isinstance(value,
                                                           (int, float))):
      raise RowError(WRONG_TYPE, f'expected an integer, got '
                     f'{describe(value)}', name)
    if isinstance(value, int):
      return _in_int64(value, name, value)
    if isinstance(value, float):
      return _whole(value, name, value, repr(value))
    text = _as_text(value, name).strip()
    try:
      whole = int(text)
    except ValueError:
      pass  # not in integer syntax, or more digits than int() reads
    else:
      return _in_int64(whole, name, text)
    try:
      number = float(text)
    except ValueError:
      raise RowError(NOT_A_NUMBER, f'{clip(text)!r} is not a number',
                     name) from None
    if math.isinf(number) and not _spelled_non_finite(text):
      raise RowError(OUT_OF_RANGE, f'{clip(text)} does not fit in a 64-bit '
                     'integer', name)
    return _whole(number, name, text, repr(clip(text)))

  return parse


def _float_parser(name: str, json: bool) -> Parser:
  """A float32 column: finite numbers up to float32's largest, whatever the
  spelling; larger ones are out of range, not rounded to infinity."""

  def parse(value: Any) -> float:
    if isinstance(value, bool) or (json and not isinstance(value,
                                                           (int, float))):
      raise RowError(WRONG_TYPE, f'expected a number, got {describe(value)}',
                     name)
    text: Any
    if isinstance(value, (int, float)):
      text = value
      try:
        number = float(value)
      except OverflowError:  # an int beyond a double
        number = math.inf
      spelled = isinstance(value, float)
    else:
      text = _as_text(value, name).strip()
      try:
        number = float(text)
      except ValueError:
        raise RowError(NOT_A_NUMBER, f'{clip(text)!r} is not a number',
                       name) from None
      spelled = _spelled_non_finite(text)
    if math.isnan(number) or (math.isinf(number) and spelled):
      raise RowError(NON_FINITE, f'{shown(text)!r} is not finite', name)
    if not abs(number) <= FLOAT32_MAX:
      raise RowError(
          OUT_OF_RANGE, f'{shown(text)} does not fit in a 32-bit '
          f'float (largest {FLOAT32_MAX:.7g})', name)
    return number

  return parse


def _string_parser(name: str, allowed: Optional[Collection[str]],
                   json: bool) -> Parser:
  allowed_set = frozenset(allowed or ())

  def parse(value: Any) -> str:
    if json:
      text = _json_string(value, name)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      text = str(value)  # a Parquet number in a string column
    else:
      text = _as_text(value, name).strip()
    if allowed_set and text not in allowed_set:
      raise RowError(NOT_ALLOWED, f'{clip(text)!r} is not one of '
                     f'{sorted(allowed_set)}', name)
    return text

  return parse


def _spelled_parser(name: str, parse_fn: Callable[[Any], int], reason: str,
                    json: bool) -> Parser:
  """A bool or timestamp in any spelling the training data may have."""

  def parse(value: Any) -> int:
    if json:
      if isinstance(value, str):
        _json_string(value, name)
      elif not isinstance(value, (int, float)):
        raise RowError(
            WRONG_TYPE, f'expected a string or a number, got '
            f'{describe(value)}', name)
    if isinstance(value, int) and not isinstance(value, bool):
      _in_int64(value, name, value)
    if isinstance(value, bytes):
      value = _as_text(value, name)
    try:
      return parse_fn(value)
    except OutOfRange as e:
      raise RowError(OUT_OF_RANGE, str(e), name) from None
    except (ValueError, OverflowError) as e:
      raise RowError(reason, str(e), name) from None

  return parse


def _list_parser(name: str, separator: str, allowed: Optional[Collection[str]],
                 json: bool) -> Parser:
  """A list column: one field joined by the separator (CSV, or a JSON string),
  or a list of strings (Parquet, tf.Example, JSON); [] means no values."""
  item = _string_parser(name, allowed, json)

  def parse(value: Any) -> List[str]:
    if isinstance(value, (list, tuple)):
      items = []
      for v in value:
        if json and not isinstance(v, str):
          raise RowError(
              WRONG_TYPE, 'expected a list of strings, got an '
              f'item that is {describe(v)}', name)
        text = item(v).strip()
        if text or not json:
          items.append(text)
      return items
    if json:
      return split_list(
          _json_string(value, name, 'a list of strings'), separator)
    return split_list(_as_text(value, name), separator)

  return parse
