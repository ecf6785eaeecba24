"""manifest.json: what went in, where every row went, how long it took.

The counts must reconcile (every input row is in a split or in the
quarantine); a run whose counts do not add up fails instead of publishing.
"""

import datetime
import importlib.metadata
import platform
from typing import Any, Dict, List, Mapping, Sequence

from core.config import DatasetConfig
from pipeline import cleanse

_PACKAGES = ('apache-beam', 'tensorflow', 'tensorflow-transform',
             'tensorflow-data-validation', 'tfx-bsl', 'tensorflow-metadata',
             'pyarrow', 'tf-keras', 'numpy')


def library_versions() -> Dict[str, str]:
  versions = {'python': platform.python_version()}
  for name in _PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = 'not installed'
  return versions


def _input_summary(pattern: str, files: List[str],
                   counts: Mapping[str, int]) -> Dict[str, Any]:
  by_reason = {
      k[len(cleanse.QUARANTINED_PREFIX):]: v
      for k, v in sorted(counts.items())
      if k.startswith(cleanse.QUARANTINED_PREFIX)
  }
  rows = counts.get(cleanse.ROWS_KEPT, 0) + counts.get(cleanse.ROWS_QUARANTINED,
                                                       0)
  return {
      'pattern': pattern,
      'files': files,
      'lines': counts.get(cleanse.LINES, 0),
      'blank_lines': counts.get(cleanse.BLANK_LINES, 0),
      'comment_lines': counts.get(cleanse.COMMENT_LINES, 0),
      'header_lines': counts.get(cleanse.HEADER_LINES, 0),
      'rows': rows,
      'rows_kept': counts.get(cleanse.ROWS_KEPT, 0),
      'quarantined': counts.get(cleanse.ROWS_QUARANTINED, 0),
      'quarantined_by_reason': by_reason,
  }


class ReconcileError(RuntimeError):
  """Counts that do not add up: a bug, never a data problem."""


def build_manifest(
    *,
    config: DatasetConfig,
    config_path: str,
    inputs: Mapping[str, Dict[str, Any]],
    counts: Mapping[str, Any],
    split_names: List[str],
    seconds: Mapping[str, float],
    num_shards: int,
    pipeline_options: Mapping[str, Any],
    output_dir: str,
    feature_warnings: Sequence[Any] = ()) -> Dict[str, Any]:
  """Assembles the manifest and checks that its counts reconcile.

  `inputs` maps an input name ('input', 'test_input') to {'pattern', 'files'};
  `counts` maps the same names to cleanse counts and each split name to
  {'rows', 'positive'}. `feature_warnings`: column_checks.Finding objects
  for the config's features (pipeline/feature_warnings.py).
  """
  summaries = {
      name: _input_summary(spec['pattern'], spec['files'], counts.get(name, {}))
      for name, spec in inputs.items()
  }
  splits = {}
  for name in split_names:
    c = counts.get(name, {'rows': 0, 'positive': 0})
    rows = c.get('rows', 0)
    splits[name] = {
        'rows': rows,
        'label_positive_rate':
            (c.get('positive', 0) /
             rows if rows and config.label.positive is not None else None),
        'files': f'data/{name}-*-of-{num_shards:05d}.tfrecord.gz',
    }
  for name, summary in summaries.items():
    # Lines: every line is a row, blank, a comment or a header.
    other = (
        summary['blank_lines'] + summary['comment_lines'] +
        summary['header_lines'])
    if summary['lines'] != summary['rows'] + other:
      raise ReconcileError(f'{name}: {summary["lines"]} lines != '
                           f'{summary["rows"]} rows + {other} other lines')
  input_rows = sum(s['rows'] for s in summaries.values())
  quarantined = sum(s['quarantined'] for s in summaries.values())
  split_rows = sum(s['rows'] for s in splits.values())
  if input_rows != split_rows + quarantined:
    raise ReconcileError(f'{input_rows} input rows != {split_rows} rows in '
                         f'splits + {quarantined} quarantined')
  by_reason: Dict[str, int] = {}
  for s in summaries.values():
    for reason, n in s['quarantined_by_reason'].items():
      by_reason[reason] = by_reason.get(reason, 0) + n
  return {
      'created':
          datetime.datetime.now(datetime.timezone.utc
                               ).isoformat(timespec='seconds'),
      'output_dir':
          output_dir,
      'config': {
          'path': config_path,
          'name': config.name,
          'sha256': config.config_hash
      },
      'inputs':
          summaries,
      'rows': {
          'input': input_rows,
          **{
              name: s['rows'] for name, s in splits.items()
          },
          'quarantined': quarantined,
      },
      'quarantined_by_reason':
          dict(sorted(by_reason.items())),
      'feature_warnings': [f.to_json() for f in feature_warnings],
      'splits':
          splits,
      'seconds': {
          k: round(v, 3) for k, v in seconds.items()
      },
      'versions':
          library_versions(),
      'pipeline_options':
          dict(pipeline_options),
  }


def format_summary(manifest: Mapping[str, Any]) -> str:
  """A few human-readable lines for the console."""
  rows = manifest['rows']
  lines = [
      f'input rows: {rows["input"]:,}  quarantined: '
      f'{rows["quarantined"]:,}'
  ]
  for name, split in manifest['splits'].items():
    rate = split['label_positive_rate']
    rate_text = f'{rate:.4f}' if rate is not None else 'n/a'
    lines.append(f'  {name:<5} {split["rows"]:>10,} rows  positive rate '
                 f'{rate_text}')
  for reason, n in manifest['quarantined_by_reason'].items():
    lines.append(f'  quarantined {reason}: {n:,}')
  for warning in manifest.get('feature_warnings', ()):
    lines.append(f'  feature warning {warning["column"]}: '
                 f'{warning["reason"]}')
  seconds = manifest['seconds']
  lines.append('seconds: ' +
               ', '.join(f'{k} {v:.1f}' for k, v in seconds.items()))
  return '\n'.join(lines)
