"""Scale-up UCI Adult: N rows with Adult's columns and realistic distributions.

    python -m benchmarks.generate_census --rows 2000000 --out /tmp/census-2M \\
        [--source /path/to/adult.data] [--shards 8] [--seed 0]

Rows are real Adult rows resampled with replacement, then perturbed the way
another year of the same survey might differ: ages and working hours move by a
year or an hour or two, fnlwgt (a sampling weight) and non-zero capital
gains/losses by a few per cent, and about 2 % of rows take one categorical value
(workclass, occupation or native country) from another row. Joint
distributions (education vs. income, marital status vs. relationship, the
label's dependence on every feature) and the missing values (`?`) are those of
the real data, which a purely synthetic generator would not give; perturbing
makes almost every row distinct, so the hash split is not skewed by
duplicates. Numbers stay within the real data's ranges (capital gains are
top-coded at 99999 in the survey), so the curated schema accepts them. A small rate of malformed lines (default 1 in 10,000) keeps the
quarantine path busy as in real feeds.

Output is sharded CSV in the census dialect (`, `-separated, no header,
labels `<=50K` / `>50K`): `part-SSSSS-of-NNNNN.csv`, plus `_generated.json`
with the parameters, so that a later run with the same parameters reuses the
files instead of writing them again.
"""

import argparse
import json
import math
import os
import pathlib
import sys
from typing import Dict, List, Optional

import numpy as np

COLUMNS = [
    'age', 'workclass', 'fnlwgt', 'education', 'education_num',
    'marital_status', 'occupation', 'relationship', 'race', 'sex',
    'capital_gain', 'capital_loss', 'hours_per_week', 'native_country',
    'income_bracket'
]
INTS = ('age', 'fnlwgt', 'education_num', 'capital_gain', 'capital_loss',
        'hours_per_week')
SWAPPABLE = ('workclass', 'occupation', 'native_country')
MARKER = '_generated.json'
GENERATOR_VERSION = 2

ROOT = pathlib.Path(__file__).resolve().parent.parent


def find_adult_data() -> Optional[str]:
  """adult.data from $ADULT_DATA_DIR, the shared data folder or `make data`."""
  for d in (os.environ.get('ADULT_DATA_DIR',
                           ''), str(ROOT.parent / 'shared' / 'data' / 'census'),
            str(ROOT / 'data' / 'census')):
    path = os.path.join(d, 'adult.data')
    if d and os.path.exists(path):
      return path
  return None


def read_adult(path: str) -> Dict[str, np.ndarray]:
  """The well-formed rows of an Adult file, column by column."""
  rows = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      fields = [v.strip() for v in line.rstrip('\n').split(',')]
      if len(fields) == len(COLUMNS):
        fields[-1] = fields[-1].rstrip('.')  # adult.test labels end in '.'
        rows.append(fields)
  if not rows:
    raise SystemExit(f'{path}: no Adult rows found')
  columns = {}
  for i, name in enumerate(COLUMNS):
    values = [r[i] for r in rows]
    columns[name] = (
        np.array([int(v) for v in values], dtype=np.int64)
        if name in INTS else np.array(values, dtype=object))
  return columns


def _jitter(rng, values, low, high, lo_clip, hi_clip, rate=1.0):
  step = rng.integers(low, high + 1, size=len(values))
  if rate < 1.0:
    step *= rng.random(len(values)) < rate
  return np.clip(values + step, lo_clip, hi_clip)


def _scale(rng, values, sigma):
  out = np.rint(values * np.exp(rng.normal(0.0, sigma, size=len(values))))
  return np.where(values > 0, np.maximum(out, 1), 0).astype(np.int64)


def sample_rows(real: Dict[str, np.ndarray], n: int,
                rng: np.random.Generator) -> Dict[str, np.ndarray]:
  """n rows resampled from `real` and perturbed (see the module docstring)."""
  size = len(real['age'])
  picked = rng.integers(0, size, size=n)
  out = {name: values[picked] for name, values in real.items()}
  out['age'] = _jitter(rng, out['age'], -1, 1, 17, 90)
  out['hours_per_week'] = _jitter(
      rng, out['hours_per_week'], -2, 2, 1, 99, rate=0.5)
  out['fnlwgt'] = _scale(rng, out['fnlwgt'], 0.1)
  out['capital_gain'] = _scale(rng, out['capital_gain'], 0.05)
  out['capital_loss'] = _scale(rng, out['capital_loss'], 0.05)
  # Stay inside the real ranges: capital gains are top-coded at 99999 in the
  # survey, and the curated schema rejects values outside what Adult has.
  for name in INTS:
    out[name] = np.clip(out[name], real[name].min(), real[name].max())
  swap = rng.random(n) < 0.02
  which = rng.integers(0, len(SWAPPABLE), size=n)
  donors = rng.integers(0, size, size=n)
  for i, name in enumerate(SWAPPABLE):
    rows = np.flatnonzero(swap & (which == i))
    out[name][rows] = real[name][donors[rows]]
  return out


def _bad_line(rng: np.random.Generator, line: str) -> str:
  fields = line.split(', ')
  kind = rng.integers(0, 3)
  if kind == 0:  # a truncated line
    return ', '.join(fields[:len(fields) // 2])
  if kind == 1:  # a non-numeric age
    fields[0] = 'unknown'
  else:  # a label outside the classes
    fields[-1] = 'n/a'
  return ', '.join(fields)


def format_lines(rows: Dict[str, np.ndarray], bad_rate: float,
                 rng: np.random.Generator) -> List[str]:
  text = [
      rows[name].astype(str) if name in INTS else rows[name] for name in COLUMNS
  ]
  lines = [', '.join(fields) for fields in zip(*text)]
  for i in np.flatnonzero(rng.random(len(lines)) < bad_rate):
    lines[i] = _bad_line(rng, lines[i])
  return lines


def generate(source: str,
             rows: int,
             out: str,
             shards: int,
             seed: int,
             bad_rate: float,
             block: int = 250_000) -> List[str]:
  """Writes the shards (reusing them when already generated); their paths."""
  params = {
      'source': os.path.abspath(source),
      'rows': rows,
      'shards': shards,
      'seed': seed,
      'bad_rate': bad_rate,
      'version': GENERATOR_VERSION,
      'source_bytes': os.path.getsize(source)
  }
  paths = [
      os.path.join(out, f'part-{i:05d}-of-{shards:05d}.csv')
      for i in range(shards)
  ]
  marker = os.path.join(out, MARKER)
  if os.path.exists(marker):
    with open(marker, encoding='utf-8') as f:
      if json.load(f) == params and all(os.path.exists(p) for p in paths):
        return paths
  os.makedirs(out, exist_ok=True)
  for name in os.listdir(out):
    if name.startswith('part-') or name == MARKER:
      os.remove(os.path.join(out, name))
  real = read_adult(source)
  rng = np.random.default_rng(seed)
  per_shard = [
      rows // shards + (1 if i < rows % shards else 0) for i in range(shards)
  ]
  for path, count in zip(paths, per_shard):
    with open(path + '.partial', 'w', encoding='utf-8') as f:
      for start in range(0, count, block):
        lines = format_lines(
            sample_rows(real, min(block, count - start), rng), bad_rate, rng)
        f.write('\n'.join(lines))
        f.write('\n')
    os.replace(path + '.partial', path)
  with open(marker, 'w', encoding='utf-8') as f:
    json.dump(params, f, indent=2)
  return paths


def default_shards(rows: int) -> int:
  """At least 4 files so that reading parallelises; ~250k rows per file."""
  return max(4, math.ceil(rows / 250_000))


def parse_rows(text: str) -> int:
  """'50k', '2M', '500000' -> int."""
  text = text.strip().lower().replace('_', '')
  scale = {'k': 1_000, 'm': 1_000_000}.get(text[-1:], 1)
  number = text[:-1] if scale > 1 else text
  return int(float(number) * scale)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument(
      '--rows',
      required=True,
      type=parse_rows,
      help='number of rows, e.g. 50k, 500k, 2M')
  parser.add_argument('--out', required=True, help='output directory')
  parser.add_argument(
      '--source',
      default=None,
      help='adult.data to resample (default: found like the '
      'tests find it)')
  parser.add_argument(
      '--shards',
      type=int,
      default=None,
      help='number of CSV files (default max(4, rows/250k))')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument(
      '--bad-rate',
      type=float,
      default=1e-4,
      help='fraction of malformed lines (default %(default)s)')
  args = parser.parse_args(argv)
  source = args.source or find_adult_data()
  if not source:
    print(
        'generate_census: adult.data not found; pass --source or set '
        'ADULT_DATA_DIR (or run `make data`)',
        file=sys.stderr)
    return 2
  paths = generate(source, args.rows, args.out, args.shards or
                   default_shards(args.rows), args.seed, args.bad_rate)
  print(f'{args.rows:,} rows in {len(paths)} files under {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
