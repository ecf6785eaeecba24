"""Errors a user can fix, reported as one clear line instead of a traceback."""


class UserError(Exception):
  """Bad input, a bad flag or a bad config: exit non-zero with the message."""


class ConfigError(UserError):
  """The dataset config is invalid; the message names the key."""


class InputError(UserError):
  """An input pattern matches nothing, is empty, or cannot be read."""
