"""python -m trainer.rollback: serve the previous (or a named) model again.

    python -m trainer.rollback --serving-dir BASE [--to VERSION]

The server serves BASE's highest version. Without --to, the served version
is moved to BASE/.rolled_back/ (trainer/publish.py), so the version below it
becomes the highest and the server swaps it in at its next poll. With
--to VERSION, every version above VERSION is moved out, and VERSION itself
is moved back in if an earlier rollback had taken it out. Nothing is
deleted: rolling back twice takes two versions out of service, and
`--to` brings either back. Each rollback is appended to
BASE/push_log.jsonl.

Exit status: 0 done, 2 bad flags or nothing to roll back to.
"""

from typing import Any, Dict, Optional, Sequence

from core import cli
from core import quiet
from trainer import flags

if __name__ == '__main__':
  # `--help` and flag mistakes are answered before the imports below.
  cli.parse_first(flags.rollback, 'rollback')

# publish imports TensorFlow; its start-up noise is filtered (core/quiet.py).
with quiet.tensorflow_startup(keras=False):
  from trainer import publish

from core.errors import InputError
from core.layout import ServingDir


def _versions_text(versions: Sequence[int]) -> str:
  return ', '.join(str(v) for v in versions) or 'none'


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Rolls back; returns the log entry written."""
  args = flags.rollback(argv)
  serving = ServingDir(args.serving_dir)
  live = serving.versions()
  out = serving.rolled_back_versions()
  served = live[-1] if live else None
  if args.to is None:
    if len(live) < 2:
      raise InputError(
          f'{serving.root} has {len(live)} version(s) in service '
          f'({_versions_text(live)}): nothing to roll back to' +
          (f'; rolled back earlier: {_versions_text(out)} (use --to)'
           if out else ''))
    target = live[-2]
  else:
    target = args.to
    if target not in live and target not in out:
      raise InputError(
          f'--to {target}: no such version in {serving.root} (in service: '
          f'{_versions_text(live)}; rolled back: {_versions_text(out)})')
  if target == served:
    raise InputError(f'version {target} is already the one served')
  moved = []
  for version in reversed(live):
    if version > target:
      publish.take_out(serving, version)
      moved.append(version)
  restored = None
  if target not in live:
    restored = publish.restore(serving, target)
  entry = {
      'time': publish.now(),
      'action': 'rollback',
      'from': served,
      'to': target,
      'taken_out': moved,
      'restored': target if restored else None,
      'reason': args.reason
  }
  publish.append_log(serving, entry)
  print(f'rollback: {serving.root} now serves version {target} (was '
        f'{served}); taken out of service: {_versions_text(moved)}' +
        (f' (kept in {serving.rolled_back_dir})' if moved else '') +
        (f'; version {target} restored from {serving.rolled_back_dir}'
         if restored else ''))
  return entry


def main(argv: Optional[Sequence[str]] = None) -> int:
  return cli.run('rollback', lambda: (run(argv), cli.OK)[1])


if __name__ == '__main__':
  quiet.filter_runtime_noise()
  cli.finish(main())
