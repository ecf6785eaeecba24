"""Data validation with TFDV: the curated schema, anomalies, drift and skew.

The curated TFDV schema (`tfdv_schema:` in the dataset YAML) is the contract
the raw data must meet: types, presence, domains, value ranges, and how far a
feature's distribution may move between train and eval/test (drift) or between
training and serving (skew). This module holds the pieces every validating
command shares: loading and drafting schemas, running
`tfdv.validate_statistics`, turning its Anomalies protos into rows a person can
read, and the validation stage of `pipeline.preprocess`.

That stage runs after the Beam job has written `stats/<split>.pb` and before
the output directory is published. A run whose statistics break the schema is
not published: the directory a trainer reads is never one that failed
validation, and an older good one is not replaced. What explains the failure
(statistics, HTML report, anomalies, the schema, the quarantine) is kept in
`<output-dir>.rejected/` instead. `--anomalies warn` publishes anyway and only
reports.
"""

import dataclasses
import logging
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, TypeAlias

from apache_beam.io.filesystems import FileSystems
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2

from core.config import DatasetConfig
from core.errors import UserError
from core.layout import PreprocessOutput
from pipeline import drift as drift_tests
from pipeline import flags
from pipeline import sinks
from pipeline import stats_report

TRAINING = 'TRAINING'
SERVING = 'SERVING'

# Files a validated preprocess output directory carries (core.layout's).
SCHEMA_FILE = PreprocessOutput.SCHEMA
ANOMALIES_FILE = PreprocessOutput.ANOMALIES
ANOMALIES_DIR = PreprocessOutput.ANOMALIES_DIR
STATS_DIR = PreprocessOutput.STATS_DIR
REPORT_FILE = PreprocessOutput.STATS_REPORT
REJECTED_SUFFIX = PreprocessOutput.REJECTED_SUFFIX

FAIL = flags.FAIL
WARN = flags.WARN

# Default thresholds of a drafted schema: the smallest change worth flagging,
# whatever the sample size; whether a change that large is more than chance
# at the sizes compared is decided by pipeline/drift.py. A category's share
# moving by 3 points; for numbers, TFDV's Jensen-Shannon divergence of
# quantile histograms, which is 0.03-0.06 for a mean moved by a quarter of a
# standard deviation (and up to about 0.04 between two samples of one
# distribution: the histograms' own noise, which the test allows for).
DRAFT_CATEGORICAL_SKEW = 0.03  # L-infinity distance
DRAFT_CATEGORICAL_DRIFT = 0.03
DRAFT_NUMERIC_SKEW = 0.02  # Jensen-Shannon divergence
DRAFT_NUMERIC_DRIFT = 0.02
DRAFT_MIN_DOMAIN_MASS = 0.99  # tolerate 1% of values outside a string domain

_AnomalyType = anomalies_pb2.AnomalyInfo.Type
COMPARATOR_TYPES = frozenset(
    _AnomalyType.Value(n)
    for n in _AnomalyType.keys()
    if n.startswith('COMPARATOR_'))
_MEASUREMENT_NAMES = {
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY:
        'L-infinity',
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE:
        'Jensen-Shannon divergence',
    anomalies_pb2.DriftSkewInfo.Measurement.NORMALIZED_ABSOLUTE_DIFFERENCE:
        'normalized absolute difference',
}

# ------------------------------------------------------------------- schema


def load_schema(path: str, what: str = 'TFDV schema') -> schema_pb2.Schema:
  """Reads a text schema; a missing or malformed file is one clear error."""
  if not FileSystems.exists(path):
    raise UserError(f'{what} {path}: file not found')
  try:
    return tfdv.load_schema_text(path)
  except Exception as e:  # noqa: BLE001 - any parse error is the user's to fix
    first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    raise UserError(f'{what} {path}: not a valid TFDV schema in text format: '
                    f'{first}') from None


def write_schema(schema: schema_pb2.Schema, path: str) -> None:
  tfdv.write_schema_text(schema, path)


def configured_schema_path(config: DatasetConfig,
                           config_path: str) -> Optional[str]:
  """The config's `tfdv_schema:`, resolved against the YAML's directory."""
  if not config.tfdv_schema:
    return None
  path = config.tfdv_schema
  if os.path.isabs(path) or FileSystems.get_scheme(path) not in (None, 'file'):
    return path
  base = config_path.rsplit('/', 1)[0] if '/' in config_path else '.'
  return FileSystems.join(base, path)


def check_schema_matches(schema: schema_pb2.Schema, config: DatasetConfig,
                         where: str) -> None:
  """A schema must describe exactly the raw columns the pipeline carries.

  Otherwise every run would report a dropped or new column; that is a config
  mistake, caught before a long job starts.
  """
  in_schema = [f.name for f in schema.feature]
  expected = [c.name for c in config.raw_columns]
  missing = [n for n in expected if n not in in_schema]
  extra = [n for n in in_schema if n not in expected]
  if missing or extra:
    parts = []
    if missing:
      parts.append('missing ' + ', '.join(missing))
    if extra:
      parts.append('unknown ' + ', '.join(extra))
    raise UserError(
        f'{where}: the schema does not match the config {config.name!r} '
        f'({"; ".join(parts)}); its features must be the raw columns '
        f'{", ".join(expected)}')


def check_presence_matches(schema: schema_pb2.Schema, config: DatasetConfig,
                           where: str) -> None:
  """Missing values are decided per column in the config and the schema
  together: a column's `max_missing` must be 1 - the schema feature's
  presence.min_fraction, the share TFDV itself checks.

  So one missing value in a column that may miss up to 1% fails nothing,
  while 20% missing there is TFDV's FEATURE_TYPE_LOW_FRACTION_PRESENT
  anomaly; and the two files cannot drift apart unnoticed.
  """
  features = {f.name: f for f in schema.feature}
  for column in config.raw_columns:
    if column.max_missing is None or column.name not in features:
      continue
    feature = features[column.name]
    expected = 1.0 - column.max_missing
    actual = (
        feature.presence.min_fraction if feature.HasField('presence') else 0.0)
    if abs(actual - expected) > 1e-9:
      raise UserError(
          f'{where}: feature {column.name!r} has presence.min_fraction '
          f'{actual:g}, but the config lets up to {column.max_missing:g} of '
          f'its values be missing (max_missing), which is min_fraction '
          f'{expected:g}; make the two agree')


def resolve_schema(
    config: DatasetConfig,
    config_path: str,
    override: Optional[str] = None) -> Optional[schema_pb2.Schema]:
  """The curated schema for a run (--schema, else the config's), or None.

  Loaded before the Beam job starts so that a wrong path fails in a second,
  not after the job.
  """
  path = override or configured_schema_path(config, config_path)
  if path is None:
    return None
  what = '--schema' if override else 'tfdv_schema'
  schema = load_schema(path, what=what)
  check_schema_matches(schema, config, f'{what} {path}')
  check_presence_matches(schema, config, f'{what} {path}')
  return schema


def draft_schema(statistics: statistics_pb2.DatasetFeatureStatisticsList,
                 config: DatasetConfig) -> schema_pb2.Schema:
  """tfdv.infer_schema plus the structure a curated schema needs.

  Adds what inference cannot know: the TRAINING and SERVING environments (the
  label is not sent at serving time), skew and drift comparators with default
  thresholds (L-infinity for strings, Jensen-Shannon divergence on quantile
  histograms for numbers), and some tolerance for rare unseen values. Missing
  values are governed by `presence` alone: a fixed `shape` would also turn
  every missing value into an anomaly. A column's `max_missing` in the config
  sets its presence.min_fraction (1 - max_missing).
  """
  schema = tfdv.infer_schema(statistics, infer_feature_shape=False)
  del schema.default_environment[:]
  schema.default_environment.extend([TRAINING, SERVING])
  label = config.label.column
  domains = {d.name for d in schema.string_domain}
  max_missing = {
      c.name: c.max_missing
      for c in config.raw_columns
      if c.max_missing is not None
  }
  for feature in schema.feature:
    if feature.name in max_missing:
      feature.presence.min_fraction = 1.0 - max_missing[feature.name]
    if feature.name == label:
      feature.not_in_environment.append(SERVING)
    if feature.type == schema_pb2.BYTES:
      if feature.name != label:
        feature.skew_comparator.infinity_norm.threshold = (
            DRAFT_CATEGORICAL_SKEW)
      feature.drift_comparator.infinity_norm.threshold = (
          DRAFT_CATEGORICAL_DRIFT)
      if feature.domain in domains and feature.name != label:
        feature.distribution_constraints.min_domain_mass = (
            DRAFT_MIN_DOMAIN_MASS)
    elif feature.type in (schema_pb2.INT, schema_pb2.FLOAT):
      # A numeric label (regression) is not sent at serving time either.
      pairs = ((feature.skew_comparator, DRAFT_NUMERIC_SKEW),
               (feature.drift_comparator, DRAFT_NUMERIC_DRIFT))
      for comparator, threshold in pairs[feature.name == label:]:
        jsd = comparator.jensen_shannon_divergence
        jsd.threshold = threshold
        jsd.source.type = schema_pb2.HistogramSelection.QUANTILES
  return _canonical_order(schema, config)


def _canonical_order(schema: schema_pb2.Schema,
                     config: DatasetConfig) -> schema_pb2.Schema:
  """Features in the config's column order, string domains by name.

  TFDV lists features in the order the statistics hold them, which depends on
  how a runner bundled the data; a fixed order makes the same data draft the
  same bytes on every runner.
  """
  position = {c.name: i for i, c in enumerate(config.columns)}
  features = sorted(
      schema.feature,
      key=lambda f: (position.get(f.name, len(position)), f.name))
  domains = sorted(schema.string_domain, key=lambda d: d.name)
  ordered = schema_pb2.Schema()
  ordered.CopyFrom(schema)
  del ordered.feature[:]
  ordered.feature.extend(features)
  del ordered.string_domain[:]
  ordered.string_domain.extend(domains)
  return ordered


# --------------------------------------------------------------- statistics


def load_statistics(path: str) -> statistics_pb2.DatasetFeatureStatisticsList:
  if not FileSystems.exists(path):
    raise UserError(f'{path}: statistics file not found')
  return tfdv.load_stats_binary(path)


def dataset(
    stats: statistics_pb2.DatasetFeatureStatisticsList
) -> statistics_pb2.DatasetFeatureStatistics:
  """The single (unsliced) dataset of a statistics list."""
  return stats.datasets[0]


# ---------------------------------------------------------------- anomalies


@dataclasses.dataclass
class AnomalyRow:
  """One reason one feature is anomalous, in words."""
  feature: str
  anomaly: str  # TFDV's short description, e.g. "Column dropped"
  type: str  # TFDV's AnomalyInfo.Type name, e.g. "FEATURE_TYPE_NOT_PRESENT"
  description: str
  dataset: str = ''

  def to_json(self) -> Dict[str, str]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class Measurement:
  """A distance TFDV measured for a feature, with the schema's threshold."""
  feature: str
  comparator: str
  value: float
  threshold: float

  @property
  def flagged(self) -> bool:
    return self.value > self.threshold

  def to_json(self) -> Dict[str, Any]:
    return {
        'feature': self.feature,
        'comparator': self.comparator,
        'value': self.value,
        'threshold': self.threshold,
        'flagged': self.flagged
    }


def anomaly_rows(anomalies: anomalies_pb2.Anomalies,
                 dataset_name: str = '',
                 types: Optional[frozenset] = None) -> List[AnomalyRow]:
  """One row per reason; `types` keeps only those AnomalyInfo types."""
  rows = []
  infos = sorted(anomalies.anomaly_info.items())
  if anomalies.HasField('dataset_anomaly_info'):
    infos.append(('(dataset)', anomalies.dataset_anomaly_info))
  for feature, info in infos:
    reasons = list(info.reason) or [info]
    for reason in reasons:
      rtype = getattr(reason, 'type', _AnomalyType.UNKNOWN_TYPE)
      if types is not None and rtype not in types:
        continue
      rows.append(
          AnomalyRow(
              feature=feature,
              anomaly=reason.short_description or info.short_description,
              type=_AnomalyType.Name(rtype),
              description=reason.description or info.description,
              dataset=dataset_name))
  return rows


def measurements(anomalies: anomalies_pb2.Anomalies,
                 kind: str) -> List[Measurement]:
  """The 'drift' or 'skew' distances TFDV measured, feature by feature."""
  out = []
  for info in anomalies.drift_skew_info:
    feature = '.'.join(info.path.step)
    items = (
        info.drift_measurements if kind == 'drift' else info.skew_measurements)
    for m in items:
      out.append(
          Measurement(feature, _MEASUREMENT_NAMES.get(m.type, 'unknown'),
                      float(m.value), float(m.threshold)))
  return sorted(out, key=lambda m: m.feature)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A plain-text table; the last column is left unpadded (descriptions)."""
  cells = [[str(c) for c in r] for r in rows]
  widths = [
      max([len(headers[i])] + [len(r[i])
                               for r in cells])
      for i in range(len(headers) - 1)
  ]

  def line(values):
    head = '  '.join(v.ljust(w) for v, w in zip(values, widths))
    return (head + '  ' + values[-1]).rstrip()

  out = [
      line(list(headers)),
      line(['-' * w for w in widths] + ['-' * len(headers[-1])])
  ]
  out.extend(line(r) for r in cells)
  return '\n'.join(out)


def anomaly_table(rows: Sequence[AnomalyRow], with_dataset: bool) -> str:
  if with_dataset:
    return format_table(
        ('split', 'feature', 'anomaly', 'description'),
        [(r.dataset, r.feature, r.anomaly, r.description) for r in rows])
  return format_table(('feature', 'anomaly', 'description'),
                      [(r.feature, r.anomaly, r.description) for r in rows])


def measurement_table(items: Sequence[Any]) -> str:
  """Measurements, or drift.Decision rows with the sample sizes, p-value
  and the level it had to beat."""
  if not items or not isinstance(items[0], drift_tests.Decision):
    return format_table(
        ('feature', 'comparator', 'distance', 'threshold', 'status'),
        [(m.feature, m.comparator, f'{m.value:.4f}', f'{m.threshold:.4f}',
          'ANOMALY' if m.flagged else 'ok') for m in items])
  base, other = items[0].baseline, items[0].compared
  return format_table(
      ('feature', 'comparator', f'{base} rows' if base else '', f'{other} rows',
       'distance', 'threshold', 'p-value', 'needed', 'verdict'),
      [(d.feature, d.check, f'{d.baseline_rows:,}' if d.baseline else '',
        f'{d.compared_rows:,}', f'{d.distance:.4f}', f'{d.threshold:.4f}',
        drift_tests.p_text(d), drift_tests.level_text(d),
        drift_tests.VERDICT_TEXT[d.verdict]) for d in items])


def reviewed_rows(rows: Sequence[AnomalyRow],
                  review: 'drift_tests.Review',
                  compared_of: Optional[Mapping[str, str]] = None):
  """(kept, within chance): TFDV's anomaly rows after the sample-size test.

  A row whose reason is a tested share or distance (see
  drift.Review.decision_for) stands only when its decision is an anomaly;
  the others are kept aside with the p-value that dismissed them. Flagged
  missing shares, which TFDV does not measure, are added.
  `compared_of` maps a row's dataset to the decisions' compared name.
  """
  kept, dismissed = [], []
  for r in rows:
    compared = (compared_of or {}).get(r.dataset, r.dataset)
    d = review.decision_for(r.feature, r.type, compared)
    if d is None or d.flagged:
      kept.append(
          dataclasses.replace(
              r,
              description=(f'{r.description} ({drift_tests.why(d)})'
                           if d else r.description)))
    else:
      dismissed.append(
          dict(
              r.to_json(),
              p_value=d.p_value,
              level=d.level,
              verdict=d.verdict,
              detail=d.detail))
  names = {v: k for k, v in (compared_of or {}).items()}
  for d in review.flagged_missing_shares():
    kept.append(
        AnomalyRow(
            feature=d.feature,
            anomaly='Missing share changed',
            type=drift_tests.MISSING_SHARE_TYPE,
            description=drift_tests.missing_description(d),
            dataset=names.get(d.compared, d.compared)))
  return kept, dismissed


# ---------------------------------------------------- validating the splits

StatsList: TypeAlias = statistics_pb2.DatasetFeatureStatisticsList


def review_splits(schema: schema_pb2.Schema,
                  stats: Mapping[str, StatsList],
                  results: Mapping[str, anomalies_pb2.Anomalies],
                  false_alarm_rate: float = 0.01,
                  baseline: str = 'train') -> 'drift_tests.Review':
  """The sample-size decisions of one run: every split's drift from train
  and every split's schema shares, Holm-corrected together."""
  return drift_tests.review(
      [(dataset(stats[baseline]), dataset(stats[n]), results[n], 'drift',
        (baseline, n)) for n in stats if n != baseline],
      [(dataset(stats[n]), n) for n in stats], schema, false_alarm_rate)


def validate_splits(
    schema: schema_pb2.Schema,
    stats: Mapping[str, StatsList],
    baseline: str = 'train') -> Dict[str, anomalies_pb2.Anomalies]:
  """Every split against the schema (TRAINING), every other split for drift.

  Train is the baseline: it is what the analyzers and the model saw, so eval
  and test are compared with it, never with each other.
  """
  results = {}
  for name, split_stats in stats.items():
    previous = stats[baseline] if name != baseline else None
    results[name] = tfdv.validate_statistics(
        split_stats, schema, environment=TRAINING, previous_statistics=previous)
  return results


class AnomaliesFound(Exception):
  """The data broke the schema; carries the table main() prints."""

  def __init__(self, message: str, table: str, count: int):
    super().__init__(message)
    self.message = message
    self.table = table
    self.count = count

  def report(self) -> str:
    return f'{self.table}\n\n{self.message}'


def validate_output(out,
                    *,
                    config: DatasetConfig,
                    split_names: Sequence[str],
                    schema: Optional[schema_pb2.Schema],
                    schema_source: Optional[str],
                    on_anomalies: str = FAIL,
                    feature_warnings=None) -> Dict[str, Any]:
  """The validation stage of preprocess, on the staged output directory `out`.

  Writes schema.pbtxt, anomalies.json, anomalies/<split>.pbtxt and
  stats/report.html into the staging directory. On anomalies with
  `on_anomalies='fail'`, keeps those files (and stats/, quarantine/) in
  `<final>.rejected/` and raises AnomaliesFound; the caller then discards the
  staging directory, so nothing is published.

  Without a curated schema, one is drafted from the train statistics for this
  run. It can only say how eval and test differ from train, with default
  thresholds nobody chose, so its findings are warnings, never a failure.
  """
  stats = {n: load_statistics(out.files.stats_path(n)) for n in split_names}
  curated = schema is not None
  if not curated:
    schema = draft_schema(stats['train'], config)
    schema_source = 'drafted from the train split (no tfdv_schema: in config)'
    on_anomalies = WARN
    logging.warning(
        'no curated TFDV schema (tfdv_schema: in %s); validating against one '
        'drafted from the train split, reporting anomalies as warnings. Draft '
        'one to curate with: python -m pipeline.schema infer', config.name)
  results = validate_splits(schema, stats)
  # TFDV's fixed thresholds, then whether each finding is more than chance
  # at these split sizes (pipeline/drift.py).
  review = review_splits(schema, stats, results, config.false_alarm_rate)

  rows, drift = [], {}
  for name in split_names:
    rows.extend(anomaly_rows(results[name], name))
    if name != 'train':
      drift[name] = review.comparisons(name)
  rows, dismissed = reviewed_rows(rows, review)
  status = 'ok' if not rows else ('warn' if on_anomalies == WARN else 'failed')

  write_schema(schema, out.files.schema_path)
  tf.io.gfile.makedirs(out.path(ANOMALIES_DIR))
  for name, anomalies in results.items():
    tfdv.write_anomalies_text(anomalies, out.files.anomalies_proto_path(name))
  doc = {
      'status': status,
      'schema': schema_source,
      'curated_schema': curated,
      'environment': TRAINING,
      'baseline': 'train',
      'on_anomalies': on_anomalies,
      'anomalies': [r.to_json() for r in rows],
      'drift': {
          n: [m.to_json() for m in ms] for n, ms in drift.items()
      },
      'missing_share': {
          n: [d.to_json() for d in review.missing_shares(n)] for n in drift
      },
      'schema_shares': [d.to_json() for d in review.rules()],
      'within_chance': dismissed,
      'false_alarm_rate': review.false_alarm_rate,
      'tests': review.tests,
  }
  sinks.write_json(out.files.anomalies_path, doc)
  sinks.write_text(
      out.files.stats_report_path,
      stats_report.render(
          title=f'{config.name}: statistics of the preprocessed splits',
          datasets=[(n, dataset(stats[n])) for n in split_names],
          anomalies=rows,
          measurements={
              f'drift {n} vs train': ms + review.missing_shares(n)
              for n, ms in drift.items()
          },
          notes=[
              f'Schema: {schema_source}', f'Validation: {status}',
              _chance_note(review, dismissed)
          ],
          feature_warnings=feature_warnings))

  for name in drift:
    print(f'preprocess: drift {name} vs train\n' +
          measurement_table(drift[name] + review.missing_shares(name)))
  if dismissed:
    print(_chance_note(review, dismissed))
  if not rows:
    print(f'preprocess: validation ok: {", ".join(split_names)} against '
          f'{schema_source}' + (', drift vs train' if drift else ''))
    return doc
  table = anomaly_table(rows, with_dataset=True)
  if on_anomalies == WARN:
    print(
        f'{table}\n\npreprocess: warning: {len(rows)} data anomalies '
        f'(see {ANOMALIES_FILE} and {STATS_DIR}/{REPORT_FILE} in the '
        'output directory); published anyway',
        file=sys.stderr)
    return doc
  rejected = keep_evidence(out)
  raise AnomaliesFound(
      f'preprocess: {len(rows)} data anomalies against {schema_source}; '
      f'{out.final} was NOT published. Details: {rejected}/{ANOMALIES_FILE}, '
      f'{rejected}/{STATS_DIR}/{REPORT_FILE}. Fix the data or the schema, or '
      'pass --anomalies warn to publish anyway.', table, len(rows))


def _chance_note(review: 'drift_tests.Review', dismissed: Sequence) -> str:
  text = (f'Sample sizes: {review.tests} tests, false-alarm rate '
          f'{review.false_alarm_rate:g} per run (Holm); '
          f'{drift_tests.LEGEND}.')
  if dismissed:
    text += (f' {len(dismissed)} TFDV finding(s) within chance at these '
             'sizes: ' +
             ', '.join(f'{d["dataset"]} {d["feature"]} (p = {d["p_value"]:.2g})'
                       for d in dismissed) + '.')
  return text


_EVIDENCE = (SCHEMA_FILE, ANOMALIES_FILE, ANOMALIES_DIR, STATS_DIR,
             PreprocessOutput.QUARANTINE_DIR, PreprocessOutput.CONFIG)


def keep_evidence(out) -> str:
  """Copies what explains a failed validation to `<final>.rejected/`."""
  dest = out.final + REJECTED_SUFFIX
  if FileSystems.exists(dest):
    FileSystems.delete([dest])
  for name in _EVIDENCE:
    src = out.path(name)
    if not FileSystems.exists(src):
      continue
    files = [
        m.path
        for r in FileSystems.match([src + '/**'])
        for m in r.metadata_list
    ] or [src]
    for path in files:
      target = dest + path[len(out.staging):]
      parent = target.rsplit('/', 1)[0]
      if FileSystems.get_scheme(target) in (None, 'file'):
        os.makedirs(parent, exist_ok=True)
      FileSystems.copy([path], [target])
  return dest
