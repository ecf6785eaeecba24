"""python -m pipeline.skew: training-serving skew, measured on what serving saw.

    python -m pipeline.skew --preprocess-dir DIR --serving-data PATTERN \\
        [--report-dir R] [--format auto|csv|tfrecord|jsonl|parquet]

The serving data is CSV in the dataset's dialect, TFRecord of raw tf.Examples,
Parquet, or the request log the server writes (JSON lines, one served
instance per line: {"time": ..., "model_version": ..., "features": {...},
"prediction": {...}}; plain JSON lines of raw features work too). It is
parsed by the same RowParser as the training data, in its serving mode (the
label may be absent), so both sides are cleansed alike and any difference is
in the data, not in the reading.

TFDV then validates the serving statistics against the schema the preprocess
run used (DIR/schema.pbtxt) in the SERVING environment, which catches dropped
columns, unseen values and out-of-range numbers, and compares them with the
training statistics (DIR/stats/train.pb) using each feature's skew
comparator: the measured distance against its threshold, feature by feature.

A few hundred requests are a small sample: its distances are noisy, and the
schema's shares (presence, domain mass) are crossed by chance. So every such
finding is also tested against chance at the two sample sizes
(pipeline/drift.py): a feature is skewed only when the difference is both
significant at the false-alarm rate (the config's validation.false_alarm_rate,
default 1% per check, or --false-alarm-rate) and over the schema's threshold.
The missing share of every compared feature is tested too.

Writes R/skew.json, R/skew.html (training and serving side by side) and
R/serving_stats.pb, with TFDV's Anomalies protos beside them; R defaults to
./skew_report. They are written beside R and moved into it once all are
there, so a run that fails or is stopped leaves an earlier report whole. Exit status: 0 no anomaly, 1 anomalies, 2 usage or input error
(one line on stderr).
"""

import collections
import contextlib
import dataclasses
import json
import os
import re
import shutil
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from core import cli
from core import quiet
from pipeline import flags

if __name__ == '__main__':
  # `--help` and flag mistakes are answered before the imports below.
  cli.parse_first(flags.skew, 'skew')

# Beam and TFDV are imported with their start-up noise filtered
# (core/quiet.py).
with quiet.tensorflow_startup():
  import apache_beam as beam
  from apache_beam.io.filesystems import FileSystems
  from apache_beam.options.pipeline_options import PipelineOptions
  import pyarrow as pa
  import tensorflow_data_validation as tfdv

from core.config import DatasetConfig
from core.config import load_config
from core.errors import UserError
from core.layout import PreprocessOutput
from pipeline import cleanse
from pipeline import drift
from pipeline import sinks
from pipeline import sources
from pipeline import statistics
from pipeline import stats_report
from pipeline import validation
from pipeline import windows

SKEW_JSON = 'skew.json'
SKEW_HTML = 'skew.html'
SERVING_STATS = 'serving_stats.pb'
CHUNK_SIZE = sources.CHUNK_SIZE

MALFORMED_JSON = 'malformed_json'
# Quarantine reasons that mean the data does not have the configured columns.
_LAYOUT_REASONS = (cleanse.WRONG_ARITY, cleanse.HEADER_MISMATCH)
_REJECTED = 'ROWS_REJECTED'
_EXTENSIONS = {
    '.csv': 'csv',
    '.txt': 'csv',
    '.data': 'csv',
    '.test': 'csv',
    '.tfrecord': 'tfrecord',
    '.tfrecords': 'tfrecord',
    '.tfr': 'tfrecord',
    '.jsonl': 'jsonl',
    '.json': 'jsonl',
    '.ndjson': 'jsonl',
    '.log': 'jsonl',
    '.parquet': 'parquet',
}
_SNIFF_BYTES = 4096

# ------------------------------------------------------------------- formats


def detect_format(path: str) -> str:
  """The format of one serving file, from its name or else its first bytes.

  Names may carry a compression suffix and a log-rotation number
  (requests.jsonl.3, requests.jsonl.3.gz).
  """
  name = path.rsplit('/', 1)[-1].lower()
  name = re.sub(r'\.(gz|bz2)$', '', name)
  name = re.sub(r'\.\d+$', '', name)
  ext = os.path.splitext(name)[1]
  if ext in _EXTENSIONS:
    return _EXTENSIONS[ext]
  try:
    with FileSystems.open(path) as f:
      head = f.read(_SNIFF_BYTES)
  except Exception as e:  # noqa: BLE001 - any filesystem's error is the user's
    raise UserError(f'--serving-data: cannot read {path}: {e}') from None
  text = head.lstrip(b'\xef\xbb\xbf \t\r\n')
  if text.startswith(b'{'):
    return 'jsonl'
  if b'\x00' not in head:
    try:
      head.decode('utf-8')
      return 'csv'
    except UnicodeDecodeError as e:
      if e.start >= len(head) - 3:  # a character cut by the sniff window
        return 'csv'
  return 'tfrecord'


def _read_jsonl(whole: sources.FileRange) -> Iterator[Any]:
  """Request-log lines -> raw feature dicts (or a marker for a bad line)."""
  for line in sources._read_lines(whole):  # pylint: disable=protected-access
    if not line.strip():
      yield None
      continue
    try:
      obj = json.loads(line)
    except ValueError as e:
      yield _BadRecord(f'not valid JSON: {e}')
      continue
    if not isinstance(obj, dict):
      yield _BadRecord(f'expected a JSON object, got {type(obj).__name__}')
      continue
    features = obj.get('features')
    if isinstance(features, dict):
      yield features
    elif 'features' in obj:
      yield _BadRecord('"features" is not a JSON object')
    else:
      yield obj


@dataclasses.dataclass
class _BadRecord:
  detail: str


# format: the records of a whole file, as cleanse.RowParser takes them.
_READERS: Dict[str, Callable[[sources.FileRange], Iterator[Any]]] = {
    **sources.RECORD_READERS, 'jsonl': _read_jsonl
}

# ------------------------------------------------------------------- reading


@dataclasses.dataclass
class ServingData:
  """Parsed serving rows, and an account of every record that was not used."""
  batches: List[pa.RecordBatch]
  formats: Dict[str, str]
  counts: collections.Counter
  rejected: List[Dict[str, Any]]  # first few rejected records, for the report
  unknown_features: Dict[str, int]
  seen_features: collections.Counter

  @property
  def rows(self) -> int:
    return (self.counts[cleanse.ROWS_KEPT] +
            self.counts[cleanse.ROWS_QUARANTINED])

  @property
  def rows_used(self) -> int:
    return self.counts[cleanse.ROWS_KEPT]

  def rejected_by_reason(self) -> Dict[str, int]:
    p = cleanse.QUARANTINED_PREFIX
    return {
        k[len(p):]: v for k, v in sorted(self.counts.items()) if k.startswith(p)
    }


_MAX_SAMPLES = 20


def read_serving_data(files: Sequence[str],
                      config: DatasetConfig,
                      fmt: str = 'auto') -> ServingData:
  """Reads and cleanses serving files like the training data, label optional.

  Plain Python in this process: serving samples are small next to training
  data, and reading here turns any unreadable file into one clear error.
  """
  parser = cleanse.RowParser(config, label_optional=True)
  # Window columns too: the request log records the values the model got.
  known = {c.name for c in config.columns}
  data = ServingData([], {}, collections.Counter(), [], {},
                     collections.Counter())
  for path in files:
    kind = detect_format(path) if fmt == 'auto' else fmt
    data.formats[path] = kind
    try:
      _read_file(path, kind, parser, known, data)
    except UserError:
      raise
    except Exception as e:  # noqa: BLE001 - a reader's error names the file
      raise UserError(f'--serving-data: cannot read {path} as {kind}: '
                      f'{_error_text(e)}') from None
  if config.windows and data.batches:
    # Window values a record lacks (any CSV, a log line without them) are
    # computed over all the serving rows read, grouped by entity, as
    # preprocess computes them over an input.
    table = pa.Table.from_batches(data.batches).combine_chunks()
    data.batches = [
        windows.fill_windows(b, config.windows, only_missing=True)
        for b in table.to_batches(max_chunksize=table.num_rows)
    ]
  return data


def _error_text(e: Exception) -> str:
  """The first line of an error, without TensorFlow's op decorations."""
  text = (getattr(e, 'message', None) or str(e)).strip()
  text = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', text)
  text = re.sub(r'\s*\[Op:[^\]]*\].*$', '', text, flags=re.S)
  return text.splitlines()[0] if text else repr(e)


def _read_file(path: str, kind: str, parser: cleanse.RowParser, known: set,
               data: ServingData) -> None:
  records: List[Any] = []
  first = 1
  whole = sources.FileRange(path, 0, None, 1)
  for line, record in enumerate(_READERS[kind](whole), start=1):
    if kind != 'csv':
      if record is None:  # blank line in a JSON-lines file
        data.counts[cleanse.LINES] += 1
        data.counts[cleanse.BLANK_LINES] += 1
        _flush(path, first, kind, records, parser, data)
        records, first = [], line + 1
        continue
      if isinstance(record, _BadRecord):
        _flush(path, first, kind, records, parser, data)
        records, first = [], line + 1
        _reject(data, path, line, MALFORMED_JSON, record.detail)
        continue
      if '__unparseable__' not in record:
        for name in record:
          data.seen_features[name] += 1
          if name not in known:
            data.unknown_features[name] = (
                data.unknown_features.get(name, 0) + 1)
    records.append(record)
    if len(records) >= CHUNK_SIZE:
      _flush(path, first, kind, records, parser, data)
      records, first = [], line + 1
  _flush(path, first, kind, records, parser, data)


def _reject(data: ServingData, path: str, line: int, reason: str,
            detail: str) -> None:
  data.counts[cleanse.LINES] += 1
  data.counts[cleanse.ROWS_QUARANTINED] += 1
  data.counts[cleanse.QUARANTINED_PREFIX + reason] += 1
  if len(data.rejected) < _MAX_SAMPLES:
    data.rejected.append({
        'source': path,
        'line': line,
        'reason': reason,
        'detail': detail
    })


def _flush(path: str, first: int, kind: str, records: List[Any],
           parser: cleanse.RowParser, data: ServingData) -> None:
  if not records:
    return
  batch, quarantine, counts = parser.parse_chunk(
      sources.RawChunk(path, first, 'csv' if kind == 'csv' else kind, records))
  data.counts.update(counts)
  for q in quarantine:
    if len(data.rejected) < _MAX_SAMPLES:
      data.rejected.append(
          {k: q[k] for k in ('source', 'line', 'reason', 'detail')})
  if batch is not None:
    data.batches.append(batch)


def check_usable(data: ServingData, config: DatasetConfig,
                 pattern: str) -> None:
  """Input errors (exit 2) rather than anomalies: the data is not serving
  data of this dataset at all, so there is nothing to compare."""
  where = f'--serving-data {pattern}'
  expected = ', '.join(c.name for c in config.feature_columns)
  if data.unknown_features:
    names = ', '.join(sorted(data.unknown_features))
    raise UserError(f'{where}: wrong columns: {names} not in the config '
                    f'{config.name!r}; expected raw features: {expected}')
  by_reason = data.rejected_by_reason()
  if by_reason.get(cleanse.HEADER_MISMATCH):
    first = next(
        r for r in data.rejected if r['reason'] == cleanse.HEADER_MISMATCH)
    raise UserError(f'{where}: wrong columns: {first["source"]}: '
                    f'{first["detail"]}')
  if not data.rows:
    raise UserError(f'{where}: no records to check')
  if not data.rows_used:
    reasons = ', '.join(f'{k} {v}' for k, v in by_reason.items())
    first = data.rejected[0] if data.rejected else {}
    kind = ('wrong columns'
            if set(by_reason) <= set(_LAYOUT_REASONS) else 'unreadable data')
    raise UserError(
        f'{where}: {kind}: all {data.rows} rows rejected ({reasons}); first, '
        f'{first.get("source", "")} line {first.get("line", "")}: '
        f'{first.get("detail", "")}' +
        (f'; expected the columns of '
         f'{config.name!r}: {expected}' if kind == 'wrong columns' else ''))
  features = {c.name for c in config.feature_columns}
  if data.seen_features and not features & set(data.seen_features):
    raise UserError(f'{where}: wrong columns: no record has any of the raw '
                    f'features {expected}')


# ---------------------------------------------------------------- statistics


def _without_label(batch: pa.RecordBatch, label: str) -> pa.RecordBatch:
  keep = [i for i, n in enumerate(batch.schema.names) if n != label]
  return pa.RecordBatch.from_arrays([batch.column(i) for i in keep],
                                    [batch.schema.names[i] for i in keep])


def serving_statistics(batches: Sequence[pa.RecordBatch], config: DatasetConfig,
                       path: str):
  """TFDV statistics of the serving rows, computed like the training ones.

  The transform preprocess computes each split's statistics with, so both
  sides use identical histograms and sketches.
  The label is left out: whether a serving source happens to carry it says
  nothing about skew, and the SERVING environment does not expect it.
  """
  label = config.label.column
  batches = [_without_label(b, label) for b in batches]
  options = PipelineOptions([
      '--runner=DirectRunner', '--direct_running_mode=in_memory',
      '--direct_num_workers=1'
  ])
  with beam.Pipeline(options=options) as p:
    _ = (
        p
        | 'Batches' >> beam.Create(batches, reshuffle=False)
        | 'Statistics' >> statistics.ComputeStatistics(path))
  return tfdv.load_stats_binary(path)


# ---------------------------------------------------------------- validation


@dataclasses.dataclass
class SkewResult:
  """TFDV's findings on one serving sample, as rows and as protos, and the
  sample-size decisions on them."""
  anomalies: List[validation.AnomalyRow]
  measurements: List[drift.Decision]  # one per skew comparator
  serving_anomalies: Any  # anomalies_pb2.Anomalies, SERVING environment
  skew_anomalies: Any  # anomalies_pb2.Anomalies, skew comparators
  review: drift.Review
  within_chance: List[Dict[str, Any]] = dataclasses.field(default_factory=list)


TRAINING_NAME, SERVING_NAME = 'training', 'serving'


def check_skew(
    train_stats,
    serving_stats,
    schema,
    false_alarm_rate: float = drift.DEFAULT_FALSE_ALARM_RATE) -> SkewResult:
  """Serving statistics against the schema (SERVING) and against training.

  Two TFDV validations: the serving data alone in the SERVING environment
  (types, presence, domains, ranges; the label is not expected), and the
  training statistics with the serving ones for the skew comparators. The
  second also re-validates training data against the schema, which
  preprocess already did, so only its comparator findings are kept. Then
  drift.review decides which findings are more than chance at the two
  sample sizes; the others are returned as `within_chance`.
  """
  serving = tfdv.validate_statistics(
      serving_stats, schema, environment=validation.SERVING)
  skew = tfdv.validate_statistics(
      train_stats,
      schema,
      environment=validation.TRAINING,
      serving_statistics=serving_stats)
  review = drift.review([(validation.dataset(train_stats),
                          validation.dataset(serving_stats), skew, 'skew',
                          (TRAINING_NAME, SERVING_NAME))],
                        [(validation.dataset(serving_stats), SERVING_NAME)],
                        schema, false_alarm_rate)
  rows = (
      validation.anomaly_rows(serving, 'serving') +
      validation.anomaly_rows(skew, 'skew', types=validation.COMPARATOR_TYPES))
  rows, dismissed = validation.reviewed_rows(rows, review, {
      'serving': SERVING_NAME,
      'skew': SERVING_NAME
  })
  rows.sort(key=lambda r: (r.feature, r.type))
  return SkewResult(rows, review.comparisons(SERVING_NAME), serving, skew,
                    review, dismissed)


def rejected_rows(data: ServingData,
                  config: DatasetConfig) -> List[validation.AnomalyRow]:
  """Serving rows the parser refused: an anomaly too (the model never saw such
  values), one row per reason, naming the column when the detail does."""
  columns = {c.name for c in config.columns}
  rows = []
  for reason, n in data.rejected_by_reason().items():
    sample = next((r for r in data.rejected if r['reason'] == reason), None)
    detail = sample['detail'] if sample else ''
    feature = detail.split(':', 1)[0] if ':' in detail else ''
    feature = feature if feature in columns else '*'
    where = (f'; first: {sample["source"]} line {sample["line"]}: {detail}'
             if sample else '')
    rows.append(
        validation.AnomalyRow(
            feature=feature,
            anomaly=f'Rows rejected ({reason})',
            type=_REJECTED,
            description=f'{n} of {data.rows} serving rows could not be parsed '
            f'as the training data is{where}',
            dataset='serving'))
  return rows


# ----------------------------------------------------------------------- CLI


def _required(directory: str, path: str) -> str:
  """`path`, a file of the preprocess output `directory`, if it exists."""
  if not FileSystems.exists(path):
    name = path[len(directory):].lstrip('/')
    raise UserError(f'--preprocess-dir {directory}: {name} not found; expected '
                    'the published output of python -m pipeline.preprocess')
  return path


@dataclasses.dataclass
class SkewReport:
  """What one check found, and where its files are."""
  doc: Dict[str, Any]  # the content of skew.json
  measurements: List[drift.Decision]  # one per skew comparator, decided
  anomalies: List[validation.AnomalyRow]
  report_dir: str

  missing_shares: List[drift.Decision] = dataclasses.field(default_factory=list)

  @property
  def exit_code(self) -> int:
    return 1 if self.anomalies else 0


def run(argv: Optional[Sequence[str]] = None) -> SkewReport:
  """Runs the check and writes its files; raises UserError on bad input."""
  args = flags.skew(argv)
  pdir = args.preprocess_dir.rstrip('/') or args.preprocess_dir
  published = PreprocessOutput(pdir)
  _required(pdir, published.manifest_path)
  config_path = args.config or _required(pdir, published.config_path)
  config = load_config(config_path)
  schema_path = args.schema or _required(pdir, published.schema_path)
  schema = validation.load_schema(
      schema_path, what='--schema' if args.schema else 'schema')
  validation.check_schema_matches(schema, config, schema_path)
  train_stats = validation.load_statistics(
      _required(pdir, published.stats_path('train')))

  files = sources.resolve_files(args.serving_data, '--serving-data')
  data = read_serving_data(files, config, args.format)
  check_usable(data, config, args.serving_data)

  report_dir = args.report_dir
  with _staged_report(report_dir) as staging:
    stats_path = FileSystems.join(staging, SERVING_STATS)
    serving_stats = serving_statistics(data.batches, config, stats_path)
    rate = (
        args.false_alarm_rate
        if args.false_alarm_rate is not None else config.false_alarm_rate)
    result = check_skew(train_stats, serving_stats, schema, rate)
    anomalies = result.anomalies + rejected_rows(data, config)
    missing = result.review.missing_shares(SERVING_NAME)
    status = 'skew' if anomalies else 'ok'

    doc = {
        'status': status,
        'preprocess_dir': pdir,
        'schema': schema_path,
        'environment': validation.SERVING,
        'serving_data': {
            'pattern': args.serving_data,
            'files': files,
            'formats': sorted(set(data.formats.values())),
            'rows': data.rows,
            'rows_used': data.rows_used,
            'rows_rejected': data.counts[cleanse.ROWS_QUARANTINED],
            'rejected_by_reason': data.rejected_by_reason(),
            'rejected_samples': data.rejected,
        },
        'training_examples': validation.dataset(train_stats).num_examples,
        'serving_examples': validation.dataset(serving_stats).num_examples,
        'features': [m.to_json() for m in result.measurements],
        'missing_share': [d.to_json() for d in missing],
        'schema_shares': [d.to_json() for d in result.review.rules()],
        'anomalies': [r.to_json() for r in anomalies],
        'within_chance': result.within_chance,
        'false_alarm_rate': rate,
        'tests': result.review.tests,
    }
    sinks.write_json(FileSystems.join(staging, SKEW_JSON), doc)
    tfdv.write_anomalies_text(
        result.serving_anomalies,
        FileSystems.join(staging, 'serving_anomalies.pbtxt'))
    tfdv.write_anomalies_text(result.skew_anomalies,
                              FileSystems.join(staging, 'skew_anomalies.pbtxt'))
    sinks.write_text(
        FileSystems.join(staging, SKEW_HTML),
        stats_report.render(
            title=f'{config.name}: training vs serving',
            datasets=[('training', validation.dataset(train_stats)),
                      ('serving', validation.dataset(serving_stats))],
            anomalies=anomalies,
            measurements={
                'Skew: serving vs training': result.measurements + missing
            },
            notes=[
                f'Training: {pdir}', f'Serving: {args.serving_data} '
                f'({data.rows_used} of {data.rows} rows used)',
                f'Schema: {schema_path} (SERVING environment)',
                f'Sample sizes: {result.review.tests} tests, false-alarm '
                f'rate {rate:g} per check (Holm); {drift.LEGEND}.'
            ]))
  return SkewReport(doc, result.measurements, anomalies, report_dir, missing)


# The report's files, in the order they are moved into the report
# directory: skew.json, which says what the others hold, last.
REPORT_FILES = (SERVING_STATS, 'serving_anomalies.pbtxt',
                'skew_anomalies.pbtxt', SKEW_HTML, SKEW_JSON)


@contextlib.contextmanager
def _staged_report(report_dir: str) -> Iterator[str]:
  """A directory to write the report in, moved into `report_dir` whole.

  The files are written to REPORT_DIR.tmp-<pid> and moved into REPORT_DIR
  once all are there, so a run that fails or is stopped half-way leaves an
  earlier run's report as it was, not mixed with part of this one. The
  report's files replace those of the same names; anything else in
  REPORT_DIR is left alone.
  """
  staging = f'{report_dir.rstrip("/")}.tmp-{os.getpid()}'
  local = FileSystems.get_scheme(report_dir) in (None, 'file')
  if local:
    os.makedirs(staging, exist_ok=True)
  try:
    yield staging
    cli.check_stop()  # a stop that a destructor swallowed
    if local:
      os.makedirs(report_dir, exist_ok=True)
    for name in REPORT_FILES:
      FileSystems.rename([FileSystems.join(staging, name)],
                         [FileSystems.join(report_dir, name)])
  finally:
    if local:
      shutil.rmtree(staging, ignore_errors=True)
    else:  # an object store has no directory to remove, only the files
      left = [FileSystems.join(staging, name) for name in REPORT_FILES]
      FileSystems.delete([path for path in left if FileSystems.exists(path)])


def main(argv: Optional[Sequence[str]] = None) -> int:
  return cli.run('skew', lambda: _main(argv))


def _main(argv: Optional[Sequence[str]]) -> int:
  report = run(argv)
  sd = report.doc['serving_data']
  print(f'serving rows: {sd["rows_used"]:,} used of {sd["rows"]:,} '
        f'(training examples: {report.doc["training_examples"]:,})')
  print(
      validation.measurement_table(report.measurements + report.missing_shares))
  if report.doc['within_chance']:
    print('within chance at these sizes: ' +
          ', '.join(f'{d["feature"]} {d["anomaly"]} (p = {d["p_value"]:.2g})'
                    for d in report.doc['within_chance']))
  html_path = FileSystems.join(report.report_dir, SKEW_HTML)
  if report.anomalies:
    print(
        '\n' + validation.anomaly_table(report.anomalies, with_dataset=False),
        file=sys.stderr)
    print(
        f'\nskew: {len(report.anomalies)} anomalies; see {html_path}',
        file=sys.stderr)
  else:
    print(f'skew: no anomalies; report in {html_path}')
  return report.exit_code


if __name__ == '__main__':
  quiet.filter_runtime_noise()
  cli.finish(main())
