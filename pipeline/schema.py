"""python -m pipeline.schema: start a dataset, draft and inspect TFDV schemas.

    python -m pipeline.schema init --input data/new.csv --label COL \\
        --output schemas/new.yaml
    python -m pipeline.schema infer --config schemas/new.yaml \\
        --input 'data/new-*.csv' --output schemas/new_schema.pbtxt
    python -m pipeline.schema show schemas/census_schema.pbtxt

`init` drafts a dataset config from a CSV sample (pipeline/config_draft.py:
dialect, column types, transforms, the task from the label; empty, constant,
id and leaking columns left out, integer codes made categorical) and then a
TFDV schema for it with `infer`, and points the config's `tfdv_schema:` at
it. It prints a summary table (column, type, treatment, missing share,
distinct values, why) and a warning for each likely leak.

`infer` reads and cleanses the input exactly as preprocess does (same Beam
read and cleanse transforms, same TFDV statistics), then drafts a schema with
validation.draft_schema: types, presence and domains inferred by TFDV, plus
the TRAINING/SERVING environments and skew/drift comparators with default
thresholds. It is a draft: curate domains, ranges and thresholds, then point
the config's `tfdv_schema:` at it. Unknown flags are Beam pipeline options,
so a large input can be drafted on Dataflow.

`show` prints a schema as one table row per feature.
"""

import os
import sys
import tempfile
from typing import List, Optional, Sequence

from core import cli
from core import quiet
from pipeline import flags

if __name__ == '__main__':
  # `--help` and flag mistakes are answered before the imports below.
  cli.parse_first(flags.schema, 'schema')

# Beam and TFDV are imported with their start-up noise filtered
# (core/quiet.py).
with quiet.tensorflow_startup():
  import apache_beam as beam
  from apache_beam.io.filesystems import FileSystems
  from apache_beam.options.pipeline_options import PipelineOptions
  import tensorflow_data_validation as tfdv
  from tensorflow_metadata.proto.v0 import schema_pb2

from core.config import load_config
from core.errors import UserError
from pipeline import cleanse
from pipeline import config_draft
from pipeline import sinks
from pipeline import sources
from pipeline import statistics
from pipeline import validation
from pipeline import windows

# -------------------------------------------------------------------- infer


def infer(config_path: str, pattern: str, output: str, overwrite: bool,
          beam_args: Sequence[str]) -> schema_pb2.Schema:
  """Drafts a schema for the data matching `pattern`; returns it."""
  config = load_config(config_path)
  files = sources.resolve_files(pattern, '--input')
  if FileSystems.exists(output) and not overwrite:
    raise UserError(f'--output {output}: already exists (a curated schema?); '
                    'pass --overwrite to replace it')
  options = PipelineOptions(list(beam_args))
  with tempfile.TemporaryDirectory() as tmp:
    stats_path = os.path.join(tmp, 'stats.pb')
    counts_path = os.path.join(tmp, 'counts.json')
    with beam.Pipeline(options=options) as p:
      ingested = (
          p
          |
          'Read' >> sources.ReadRawChunks(files, config.format, csv=config.csv)
          | 'Cleanse' >> cleanse.CleanseRows(config))
      rows = ingested.rows
      if config.windows:  # as preprocess computes them, before statistics
        rows = rows | 'Windows' >> windows.AddWindowFeatures(config)
      _ = rows | 'Statistics' >> statistics.ComputeStatistics(stats_path)
      _ = (
          ingested.counts
          | 'SumCounts' >> beam.CombineGlobally(cleanse.SumCounts())
          | 'WriteCounts' >> sinks.WriteJson(counts_path))
    counts = sinks.read_json(counts_path)
    kept = counts.get(cleanse.ROWS_KEPT, 0)
    if not kept:
      raise UserError(f'--input {pattern}: no usable rows (all '
                      f'{counts.get(cleanse.ROWS_QUARANTINED, 0)} rows '
                      'quarantined); check the config\'s input section')
    schema = validation.draft_schema(tfdv.load_stats_binary(stats_path), config)
  if FileSystems.get_scheme(output) in (None, 'file'):
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  validation.write_schema(schema, output)
  print(f'schema: drafted {output} from {kept:,} rows of {len(files)} file(s) '
        f'({counts.get(cleanse.ROWS_QUARANTINED, 0):,} quarantined)')
  return schema


# --------------------------------------------------------------------- init


def init(pattern: str,
         label: str,
         output: str,
         *,
         schema_output: Optional[str] = None,
         name: Optional[str] = None,
         task: str = 'auto',
         delimiter: Optional[str] = None,
         header: Optional[bool] = None,
         encoding: str = 'utf-8',
         sample_rows: int = flags.DEFAULT_SAMPLE_ROWS,
         overwrite: bool = False,
         beam_args: Sequence[str] = ()) -> str:
  """Drafts `output` (a config YAML) and its TFDV schema; returns the YAML.

  The config is drafted from a sample of the first file; the schema from
  every file, read and cleansed with that config exactly as preprocess will.
  """
  files = sources.resolve_files(pattern, '--input')
  schema_output = schema_output or (output[:-5] if output.endswith('.yaml') else
                                    output) + '_schema.pbtxt'
  for path, flag in ((output, '--output'), (schema_output, '--schema-output')):
    if FileSystems.exists(path) and not overwrite:
      raise UserError(f'{flag} {path}: already exists; pass --overwrite to '
                      'replace it')
  stem = os.path.basename(output)
  name = name or (stem[:-5] if stem.endswith('.yaml') else stem)
  # Relative to the YAML's directory, as tfdv_schema: paths are resolved.
  relative = (
      os.path.relpath(schema_output,
                      os.path.dirname(output) or '.')
      if FileSystems.get_scheme(schema_output) in (None,
                                                   'file') else schema_output)
  draft = config_draft.draft_config(
      files[0],
      label,
      name=name,
      task=task,
      delimiter=delimiter,
      header=header,
      encoding=encoding,
      max_rows=sample_rows,
      tfdv_schema=relative)
  config = draft.config
  if FileSystems.get_scheme(output) in (None, 'file'):
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  sinks.write_text(output, draft.text)
  try:
    infer(output, pattern, schema_output, overwrite=True, beam_args=beam_args)
  except BaseException:
    FileSystems.delete([output])
    raise
  print(f'\n{summary_table(draft)}\n')
  for finding in draft.warnings:
    print(f'schema: warning: {finding.detail}', file=sys.stderr)
  left_out = len(config.columns) - len(config.feature_columns) - 1
  print(f'schema: drafted {output} ({config.label.task} task on '
        f'{config.label.column!r}, {len(config.feature_columns)} features, '
        f'{left_out} column(s) left out) and {schema_output}; review both, '
        f'then run python -m pipeline.preprocess --config {output} --input '
        f'\'{pattern}\' ...')
  return draft.text


def summary_table(draft: config_draft.Draft) -> str:
  """What was drafted for each column, and why: read before training."""
  return validation.format_table(
      ('column', 'type', 'treatment', 'missing', 'distinct', 'why'),
      [(c.column, c.type, c.treatment, f'{c.missing:.1%}', f'{c.distinct:,}',
        c.why) for c in draft.columns])


# --------------------------------------------------------------------- show


def _domain(feature: schema_pb2.Feature, schema: schema_pb2.Schema) -> str:
  kind = feature.WhichOneof('domain_info')
  if kind == 'int_domain' or kind == 'float_domain':
    d = getattr(feature, kind)
    lo = d.min if d.HasField('min') else '-inf'
    hi = d.max if d.HasField('max') else 'inf'
    return f'[{lo}, {hi}]'
  values = None
  if kind == 'domain':
    values = next((list(d.value)
                   for d in schema.string_domain
                   if d.name == feature.domain), None)
  elif kind == 'string_domain':
    values = list(feature.string_domain.value)
  if values is None:
    return kind or ''
  shown = ', '.join(values[:3]) + (', ...' if len(values) > 3 else '')
  text = f'{len(values)} values: {shown}'
  if feature.HasField('distribution_constraints'):
    mass = feature.distribution_constraints.min_domain_mass
    text += f' (>= {mass:.0%} in domain)'
  return text


def _presence(feature: schema_pb2.Feature) -> str:
  if not feature.HasField('presence'):
    return ''
  fraction = feature.presence.min_fraction
  return f'>= {fraction:.0%}' if fraction else 'optional'


def _environments(feature: schema_pb2.Feature,
                  schema: schema_pb2.Schema) -> str:
  envs = list(feature.in_environment) or list(schema.default_environment)
  envs = [e for e in envs if e not in feature.not_in_environment]
  return ', '.join(envs)


def _comparator(feature: schema_pb2.Feature, field: str) -> str:
  if not feature.HasField(field):
    return ''
  c = getattr(feature, field)
  parts = []
  if c.HasField('infinity_norm'):
    parts.append(f'L-inf {c.infinity_norm.threshold:g}')
  if c.HasField('jensen_shannon_divergence'):
    jsd = c.jensen_shannon_divergence
    source = schema_pb2.HistogramSelection.Type.Name(jsd.source.type).lower()
    parts.append(f'JSD {jsd.threshold:g}' +
                 (f' ({source})' if jsd.HasField('source') else ''))
  if c.HasField('normalized_abs_difference'):
    parts.append(f'NAD {c.normalized_abs_difference.threshold:g}')
  return ', '.join(parts)


def table(schema: schema_pb2.Schema) -> str:
  rows: List[List[str]] = []
  for f in schema.feature:
    rows.append([
        f.name,
        schema_pb2.FeatureType.Name(f.type),
        _presence(f),
        _environments(f, schema),
        _comparator(f, 'skew_comparator'),
        _comparator(f, 'drift_comparator'),
        _domain(f, schema)
    ])
  return validation.format_table(('feature', 'type', 'presence', 'environments',
                                  'skew', 'drift', 'domain'), rows)


def show(path: str) -> None:
  schema = validation.load_schema(path, what='schema')
  print(table(schema))
  envs = ', '.join(schema.default_environment) or 'none'
  print(f'\n{len(schema.feature)} features; default environments: {envs}')


# ---------------------------------------------------------------------- CLI


def main(argv: Optional[Sequence[str]] = None) -> int:
  return cli.run('schema', lambda: _main(argv))


def _main(argv: Optional[Sequence[str]]) -> int:
  parser = flags.schema_parser()
  args, extra = parser.parse_known_args(argv)
  if args.command == 'init':
    init(
        args.input,
        args.label,
        args.output,
        schema_output=args.schema_output,
        name=args.name,
        task=args.task,
        delimiter=args.delimiter,
        header=args.header,
        encoding=args.encoding,
        sample_rows=args.sample_rows,
        overwrite=args.overwrite,
        beam_args=extra)
  elif args.command == 'infer':
    schema = infer(args.config, args.input, args.output, args.overwrite, extra)
    print(table(schema))
  else:
    if extra:
      parser.error(f'unrecognized arguments: {" ".join(extra)}')
    show(args.schema)
  return cli.OK


if __name__ == '__main__':
  quiet.filter_runtime_noise()
  cli.finish(main())
