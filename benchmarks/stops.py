"""Ctrl-C and SIGTERM at random points of a running job: how many stops were clean.

    .venv/bin/python -m benchmarks.stops [--stops 100] [--side-by-side 2]
        [--min-delay 0] [--max-delay 6] [--from job|start] [--seed 1]
        [--work-dir DIR]

Runs `python -m pipeline.preprocess` on generated toy data (tests/data/
toy.yaml, 60,000 rows) over and over, `--side-by-side` jobs at a time, and
stops each one with SIGINT or SIGTERM (drawn at random) a random
`--min-delay` to `--max-delay` seconds after its Beam job has started, so
the signal lands in a different place each time: reading, a tf.Transform
trace, a SavedModel load or save, a shard merge. With `--from start` the
delay counts from the command's start instead, so that the signal also lands
in its imports and while it builds the job (a `--max-delay` of about 12
reaches into the job; one past the job's end counts as unclean: it
published). Give it a `--min-delay` of 0.5: a signal in the interpreter's
own start-up, before any of the command's code runs, gets Python's default
(SIGTERM ends the process without a word). A stop is clean when the command
exits with 128 + the signal, its last line says it was stopped and that
nothing was published (or, during its imports, that it was stopped while
starting and nothing was done),
stderr holds no traceback and no ERROR record, and neither the output
directory, its staging directory nor anything in the job's temporary
directory is left.

`tests/pipeline/test_preprocess.py` stops two jobs at one point; a signal
that lands somewhere rare shows only over many stops, which is what this
counts. The stderr of every stop that was not clean is kept under
`--work-dir` and its path printed. Exits 1 if any stop was not clean.
"""

import argparse
import concurrent.futures
import glob
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import List, NamedTuple, Optional

from tests import datagen

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOY_ROWS = 60000
# The longest a job may take to start its Beam job, or to end once stopped.
START_TIMEOUT_S = 240
STOP_TIMEOUT_S = 120


class Stop(NamedTuple):
  signal_name: str
  delay_s: float
  problems: List[str]
  stderr_path: str


def _sigint_from_a_terminal() -> None:
  """SIGINT's default, as a command run from a terminal has it, also where
  this benchmark runs with it ignored (a shell's background job), which the
  command would keep."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop_one(work: pathlib.Path, input_path: str, signum: int, delay_s: float,
              from_start: bool) -> Stop:
  out = work / 'out'
  temp = work / 'tmp'
  temp.mkdir(parents=True)
  stderr_path = work / 'stderr.txt'
  with open(stderr_path, 'w') as stderr:
    proc = subprocess.Popen([
        sys.executable, '-m', 'pipeline.preprocess', '--config',
        datagen.TOY_CONFIG, '--input', input_path, '--output-dir',
        str(out)
    ],
                            cwd=ROOT,
                            env=dict(os.environ, TMPDIR=str(temp)),
                            stdout=subprocess.DEVNULL,
                            stderr=stderr,
                            preexec_fn=_sigint_from_a_terminal)
  problems = []
  try:
    # Beam's temporary files appear once the job itself is running.
    deadline = time.monotonic() + START_TIMEOUT_S
    while (not from_start and not glob.glob(f'{out}.tmp/tmp/*') and
           proc.poll() is None):
      if time.monotonic() > deadline:
        problems.append('the job never started')
        break
      time.sleep(0.05)
    time.sleep(delay_s)
    if proc.poll() is not None:
      problems.append(f'ended (exit {proc.returncode}) before the signal')
    else:
      proc.send_signal(signum)
      proc.wait(timeout=STOP_TIMEOUT_S)
  except subprocess.TimeoutExpired:
    problems.append(f'still running {STOP_TIMEOUT_S} s after the signal')
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  name = signal.Signals(signum).name
  if not problems:
    left = glob.glob(f'{out}*') + [str(p) for p in temp.iterdir()]
    problems = verdict(signum, proc.returncode, stderr_path.read_text(),
                       str(out), left)
  return Stop(name, delay_s, problems, str(stderr_path))


def verdict(signum: int, exit_code: int, stderr: str, output_dir: str,
            left: List[str]) -> List[str]:
  """What was wrong with a stop that ended: [] for a clean one."""
  problems = []
  if exit_code != 128 + signum:
    problems.append(f'exit {exit_code}, not {128 + signum}')
  lines = stderr.strip().splitlines()
  name = signal.Signals(signum).name
  expected = (f'preprocess: stopped by {name}; nothing published to '
              f'{output_dir}',
              f'preprocess: stopped by {name} while starting; nothing done')
  if not lines or lines[-1] not in expected:
    problems.append('last line: ' + (lines[-1] if lines else '(none)'))
  if any('Traceback' in line for line in lines):
    problems.append('a traceback on stderr')
  if any(line.startswith('ERROR') for line in lines):
    problems.append('an ERROR record on stderr')
  if left:
    problems.append('left behind: ' + ', '.join(sorted(left)))
  return problems


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m benchmarks.stops', description=__doc__.split('\n', 1)[0])
  parser.add_argument('--stops', type=int, default=100)
  parser.add_argument('--side-by-side', type=int, default=2)
  parser.add_argument('--min-delay', type=float, default=0.0)
  parser.add_argument('--max-delay', type=float, default=6.0)
  parser.add_argument(
      '--from',
      dest='from_',
      choices=('job', 'start'),
      default='job',
      help='count the delay from the start of the Beam job (default) or of '
      'the command')
  parser.add_argument('--seed', type=int, default=1)
  parser.add_argument(
      '--work-dir',
      help='where the runs go (default: a new temporary '
      'directory, removed at the end unless a stop was not clean)')
  args = parser.parse_args(argv)

  work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix='stops-'))
  work.mkdir(parents=True, exist_ok=True)
  input_path = datagen.write_lines(
      str(work / 'in.csv'),
      datagen.toy_rows(TOY_ROWS, seed=5),
      header=datagen.TOY_HEADER)
  rng = random.Random(args.seed)
  draws = [(rng.choice([signal.SIGINT, signal.SIGTERM]),
            rng.uniform(args.min_delay, args.max_delay))
           for _ in range(args.stops)]
  start = time.monotonic()
  stops: List[Stop] = []
  with concurrent.futures.ThreadPoolExecutor(args.side_by_side) as pool:
    futures = [
        pool.submit(_stop_one, work / f'stop-{i:04d}', input_path, signum,
                    delay, args.from_ == 'start')
        for i, (signum, delay) in enumerate(draws)
    ]
    for i, future in enumerate(futures):
      stop = future.result()
      stops.append(stop)
      print(
          f'stop {i + 1:4d}/{args.stops} {stop.signal_name:7s} '
          f'{stop.delay_s:4.1f} s in: ' +
          ('; '.join(stop.problems) +
           f' ({stop.stderr_path})' if stop.problems else 'clean'),
          flush=True)

  unclean = [s for s in stops if s.problems]
  print(f'\n{len(stops) - len(unclean)} of {len(stops)} stops clean '
        f'({args.side_by_side} jobs side by side, signals '
        f'{args.min_delay:g} to '
        f'{args.max_delay:g} s into the '
        f'{"job" if args.from_ == "job" else "command"}, seed {args.seed}; '
        f'{time.monotonic() - start:.0f} s)')
  for name in ('SIGINT', 'SIGTERM'):
    of_signal = [s for s in stops if s.signal_name == name]
    print(f'  {name}: {sum(not s.problems for s in of_signal)} of '
          f'{len(of_signal)} clean')
  if unclean:
    print(f'the stderr of each stop that was not clean is kept in {work}')
    return 1
  if not args.work_dir:
    shutil.rmtree(work)
  return 0


if __name__ == '__main__':
  sys.exit(main())
