"""Errors a user can fix, reported as one clear line instead of a traceback."""


class UserError(Exception):
  """Bad input, a bad flag or a bad config: exit non-zero with the message."""


class ConfigError(UserError):
  """The dataset config is invalid; the message names the key."""


class InputError(UserError):
  """An input pattern matches nothing, is empty, or cannot be read."""


def first_line(e: BaseException, limit: int = 300) -> str:
  """The first line of an error's message, cut at `limit` characters: what
  a one-line report quotes of an error raised by a library."""
  line = (str(e).strip().splitlines() or [''])[0]
  return line if len(line) <= limit else line[:limit] + '...'
