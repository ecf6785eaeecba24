"""Raw values of the typed columns that have more than one spelling.

A boolean may arrive as `true`, `1` or `yes`, a timestamp as an ISO-8601
date-time or as epoch seconds, a list as one CSV field joined by a separator.
Each is normalised to one carried form here (0/1, int64 epoch seconds UTC, a
list of strings), and this one module is used wherever raw values enter the
system: the cleanse stage of the Beam job and the serving request checks. So
training and serving agree on what a value means, and the transform graph
only ever sees the carried form.

Errors are ValueError with a message meant for a person; callers add the
column name and turn it into a quarantine reason or a 400. OutOfRange, a
ValueError, says the value is well-formed but beyond what the type holds (a
timestamp past year 9999, epoch seconds too large for any date).
"""

import datetime
import math
from typing import Any, List

_TRUE = frozenset(('true', 't', 'yes', 'y', '1'))
_FALSE = frozenset(('false', 'f', 'no', 'n', '0'))
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
# Epoch seconds beyond year 9999 are not a date a person meant.
_MAX_EPOCH_SECONDS = 253402300799


class OutOfRange(ValueError):
  """A well-formed value beyond what its type can carry."""


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
  raise ValueError(f'{_clip(text)!r} is not a boolean (expected true/false, '
                   'yes/no or 1/0)')


def parse_timestamp(value: Any) -> int:
  """Seconds since 1970-01-01T00:00:00Z.

  Accepts epoch seconds (a number, or digits in a string) and ISO-8601 dates
  and date-times ('2024-05-01', '2024-05-01 13:45', '2024-05-01T13:45:10Z',
  '2024-05-01T13:45:10+02:00', fractions of a second). A date-time without an
  offset is taken as UTC.
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
    if math.isnan(seconds) or (math.isinf(seconds) and text.lstrip(
        '+-').lower() in ('inf', 'infinity')):
      raise ValueError(f'{_clip(text)!r} is not a timestamp (expected '
                       'ISO-8601 or epoch seconds)')
    return _epoch(seconds, text)
  iso = text[:-1] + '+00:00' if text[-1:] in ('Z', 'z') else text
  try:
    moment = datetime.datetime.fromisoformat(iso)
  except ValueError:
    raise ValueError(f'{_clip(text)!r} is not a timestamp (expected ISO-8601, '
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
  if not -_MAX_EPOCH_SECONDS <= seconds <= _MAX_EPOCH_SECONDS:
    shown = _clip(str(seconds if text is None else text))
    raise OutOfRange(f'{shown} is out of range for a timestamp (epoch '
                     f'seconds up to {_MAX_EPOCH_SECONDS}, year 9999)')
  return math.floor(seconds)


def _text(value: Any) -> str:
  if isinstance(value, bytes):
    return value.decode('utf-8')
  if isinstance(value, str):
    return value
  raise ValueError(f'expected text, got {type(value).__name__} {value!r}')


def _clip(text: str, limit: int = 80) -> str:
  return text if len(text) <= limit else text[:limit] + '...'
