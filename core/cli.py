"""The skeleton every command shares: logging, exit codes, one-line errors.

Each command (`python -m pipeline.preprocess`, `trainer.task`, `serving`,
...) is a `main(argv) -> int` whose body raises `UserError` for anything a
user can fix: a bad flag value, a missing file, an unusable config. `run`
turns that into one line on stderr, `<command>: error: <what and where>`,
and exit code 2, so no user ever reads a traceback for their own mistake.
What a command finds in the data (anomalies, skew, a model not good enough
to push) is exit code 1; success is 0.
"""

import argparse
import logging
import sys
from typing import Any, Callable, Optional, Sequence

from core.errors import UserError

OK = 0
FINDINGS = 1  # the command ran and found what it checks for
USAGE = 2  # bad flags, config or input: nothing was done


def parser(module: str, description: str) -> argparse.ArgumentParser:
  """An argument parser whose usage line shows how the command is run."""
  return argparse.ArgumentParser(
      prog=f'python -m {module}', description=description)


def parse_first(parse: Callable[[Optional[Sequence[str]]], Any]) -> None:
  """Parses the command line with `parse`, which needs nothing but argparse.

  A command module calls it, when it runs as the command, before it imports
  TensorFlow, TFDV or Beam (5 to 8 s on two cores): `--help` and a flag
  mistake are answered (argparse exits) at once instead of after the
  imports. The command parses the same flags again when it runs.
  """
  parse(sys.argv[1:])


def run(name: str, body: Callable[[], int]) -> int:
  """Runs a command's body with the shared logging and error handling."""
  logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
  try:
    return body()
  except UserError as e:
    print(f'{name}: error: {e}', file=sys.stderr)
    return USAGE
