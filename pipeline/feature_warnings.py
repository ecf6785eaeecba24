"""The column checks on a curated config's features, as preprocess warnings.

`schema init` leaves empty, constant, id and leaking columns out of a draft
and makes integer codes categorical (pipeline/column_checks.py). A config is
then curated by hand, and a feature added later (a column that turned out
empty in new data, an amount only known after the outcome) would go unseen.
So preprocess runs the same checks on every feature of the config it was
given and reports what they find as warnings: in the manifest, the
statistics report and on the console. They never fail a run: each may be
a deliberate choice.

What each check reads, to stay cheap on any input size:
- empty, constant, and string ids: the TFDV statistics of the train split
  the job has already written (exact: every train row);
- integer ids and codes, and leakage: a bounded sample of the input rows
  (DEFAULT_SAMPLE_ROWS), read with the job's own row parser by a child
  process while the job runs (core/forked.py), or after the job (input on
  a remote filesystem, or no child to be had).
  An uncompressed CSV file is sampled at SAMPLE_WINDOWS positions spread
  over the file (or all over a file of less than SAMPLE_WINDOWS *
  WINDOW_BYTES), not just its first lines: files are often sorted. Other
  files are sampled from their start. Rows of every split are sampled: how
  a column relates to the label is a property of the data, not of the
  split.

Text and list features are checked for emptiness only; a window feature
(computed by the job, so not in the input rows) by its statistics only.
"""

import collections
import dataclasses
import itertools
import math
import sys
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
import pyarrow as pa
from tensorflow_metadata.proto.v0 import statistics_pb2

from core.config import BINARY
from core.config import Column
from core.config import DatasetConfig
from core.config import REGRESSION
from pipeline import cleanse
from pipeline import column_checks
from pipeline import sources
from pipeline import validation
from pipeline import windows

DEFAULT_SAMPLE_ROWS = 20_000
SAMPLE_WINDOWS = 8
# Bytes read at each position; a file smaller than SAMPLE_WINDOWS of these
# is read from its start.
WINDOW_BYTES = 1 << 20
MAX_SAMPLED_FILES = 16

_UTF8_BOM = b'\xef\xbb\xbf'

CODE_ADVICE = ('; it is scaled as a quantity: consider type: string (one id '
               'per value)')
REMOVE_ADVICE = '; consider removing it from features:'


@dataclasses.dataclass
class Sample:
  """Sampled rows: each raw column's values (None: missing) and the label
  as leakage scoring wants it (see column_checks.leakage_score)."""
  rows: int
  values: Dict[str, List[Any]]
  labels: List[float]


# ------------------------------------------------------------------ sample


def _csv_windows(path: str, rows: int) -> Iterator[sources.RawChunk]:
  """Lines at SAMPLE_WINDOWS positions spread over an uncompressed file
  (or the whole of a small one), evenly spaced within what is read.

  One record per line: a record whose quoted field holds a line break is
  cut, fails to parse and is left out of the sample (the job itself reads
  it whole).
  """
  size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
  windows = SAMPLE_WINDOWS if size > SAMPLE_WINDOWS * WINDOW_BYTES else 1
  per_window = math.ceil(rows / windows)
  with FileSystems.open(
      path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    for w in range(windows):
      offset = w * size // windows
      f.seek(offset)
      block = f.read(WINDOW_BYTES if windows > 1 else size)
      lines = block.split(b'\n')
      if offset + len(block) < size:
        lines.pop()  # cut off by the read
      if offset:
        lines = lines[1:]  # the end of a line that started before
      elif lines and lines[0].startswith(_UTF8_BOM):
        lines[0] = lines[0][len(_UTF8_BOM):]
      if len(lines) > per_window:  # evenly spaced, the first line included
        step = len(lines) / per_window
        lines = [lines[int(i * step)] for i in range(per_window)]
      lines = [l[:-1] if l.endswith(b'\r') else l for l in lines]
      # Line numbers only matter for the header, which is on line 1.
      yield sources.RawChunk(path, 1 if offset == 0 else 2, 'csv', lines)


def _head(path: str, fmt: str, rows: int) -> Iterator[sources.RawChunk]:
  reader = sources.RECORD_READERS[fmt]
  records = list(
      itertools.islice(reader(sources.FileRange(path, 0, None, 1)), rows))
  yield sources.RawChunk(path, 1, fmt, records)


def _label_targets(config: DatasetConfig, values: List[Any]) -> List[float]:
  label = config.label
  nan = float('nan')
  if label.task == REGRESSION:
    out = [nan if v is None else float(v) for v in values]
    if label.log_target:  # what the model fits
      out = [math.copysign(math.log1p(abs(v)), v) for v in out]
    return out
  text = [
      None if v is None else
      (v.decode('utf-8') if isinstance(v, bytes) else str(v)) for v in values
  ]
  if label.task == BINARY:
    return [nan if v is None else float(v == label.positive) for v in text]
  index = {c: float(i) for i, c in enumerate(label.classes)}
  return [index.get(v, nan) if v is not None else nan for v in text]


def sample_input(config: DatasetConfig,
                 files: Sequence[str],
                 max_rows: int = DEFAULT_SAMPLE_ROWS) -> Optional[Sample]:
  """Up to about `max_rows` cleansed rows of the input, or None if none.

  Parsed by cleanse.RowParser, so values are typed exactly as the job typed
  them; rows the job quarantined are not in the sample.
  """
  if len(files) > MAX_SAMPLED_FILES:
    step = len(files) / MAX_SAMPLED_FILES
    files = [files[int(i * step)] for i in range(MAX_SAMPLED_FILES)]
  per_file = max(1, max_rows // len(files))
  parser = cleanse.RowParser(config)
  batches = []
  for path in files:
    splittable = (
        config.format == 'csv' and
        CompressionTypes.detect_compression_type(path)
        == CompressionTypes.UNCOMPRESSED)
    chunks = (
        _csv_windows(path, per_file) if splittable else _head(
            path, config.format, per_file))
    for chunk in chunks:
      if chunk.records:
        batch, _, _ = parser.parse_chunk(chunk)
        if batch is not None:
          batches.append(batch)
  if not batches:
    return None
  table = pa.Table.from_batches(batches)
  lists = {c.name for c in config.columns if c.is_list}
  values = {
      name: (table.column(name).to_pylist() if name in lists else _first_values(
          table.column(name))) for name in table.column_names
  }
  return Sample(table.num_rows, values,
                _label_targets(config, values[config.label.column]))


def _first_values(column: pa.ChunkedArray) -> List[Any]:
  """Each row's first value, None for a row without one (null or empty).

  Taken with array operations: a Python list per row (to_pylist) took 0.8 s
  of 20,000 Adult rows.
  """
  out: List[Any] = []
  for chunk in column.chunks:
    present, values = windows.single_values(chunk)
    firsts = iter(values.to_pylist())
    out.extend(next(firsts) if has else None for has in present.tolist())
  return out


# ------------------------------------------------------------------ checks


def _common(
    f: statistics_pb2.FeatureNameStatistics) -> statistics_pb2.CommonStatistics:
  kind = f.WhichOneof('stats')
  if kind in ('num_stats', 'string_stats', 'bytes_stats'):
    return getattr(f, kind).common_stats
  return statistics_pb2.CommonStatistics()


def _with(finding: column_checks.Finding, advice: str) -> column_checks.Finding:
  return dataclasses.replace(finding, detail=finding.detail + advice)


def _imputed_to(config: DatasetConfig, column: Column, value: float) -> bool:
  """Whether a missing value of this numeric feature becomes `value`."""
  spec = next((f for f in config.numeric if f.name == column.name), None)
  if spec is None:
    return False
  return spec.impute == 'mean' or (spec.impute == 'zero' and value == 0)


def _from_statistics(config: DatasetConfig, column: Column,
                     f: Optional[statistics_pb2.FeatureNameStatistics],
                     rows: int) -> Optional[column_checks.Finding]:
  """Empty, constant, or a string id, from the train statistics."""
  name = column.name
  common = _common(f) if f is not None else None
  if f is None or common is None or common.num_non_missing == 0:
    return _with(
        column_checks.empty(name, rows, 'rows of the train split'),
        REMOVE_ADVICE)
  if column.is_list or column.type == 'text':
    return None
  missing = common.num_missing
  if f.WhichOneof('stats') == 'num_stats':
    ns = f.num_stats
    if ns.min == ns.max:
      imputed = _imputed_to(config, column, ns.min)
      if not missing or imputed:
        return _with(
            column_checks.constant(name, ns.min, missing, imputed),
            REMOVE_ADVICE)
    return None
  ss = f.string_stats
  if ss.unique == 1 and not missing:
    return _with(
        column_checks.constant(name,
                               ss.top_values[0].value if ss.top_values else ''),
        REMOVE_ADVICE)
  found = column_checks.identifier(name, 'string', common.num_non_missing,
                                   ss.unique)
  return _with(found, REMOVE_ADVICE) if found else None


def _from_sample(config: DatasetConfig, column: Column,
                 sample: Sample) -> Optional[column_checks.Finding]:
  """Integer ids and codes, and leakage, from the sampled rows."""
  name = column.name
  values = sample.values.get(name)
  if values is None or column.is_list or column.type == 'text':
    return None
  numeric = column.type in ('int', 'float', 'timestamp')
  if column.type == 'int':
    counts = collections.Counter(v for v in values if v is not None)
    present = sum(counts.values())
    found = column_checks.identifier(name, 'int', present, len(counts), counts)
    if found:
      return _with(found, REMOVE_ADVICE)
    code = column_checks.integer_code(name, counts)
    if code:
      return _with(code, CODE_ADVICE)
  score = column_checks.leakage_score(
      values, sample.labels, config.label.task, numeric=numeric)
  if score is not None and score.leaks:
    return column_checks.leakage(name, score, column_checks.CURATED_ADVICE)
  return None


def sample_findings(
    config: DatasetConfig,
    sample: Optional[Sample]) -> Dict[str, column_checks.Finding]:
  """What the sample finds about each feature it can check (integer ids and
  codes, leakage), by feature name; the features it finds nothing in are
  left out. Needs nothing from the job, so it can run while the job does."""
  found = {}
  if sample is not None:
    for column in config.feature_columns:
      if not column.derived:
        finding = _from_sample(config, column, sample)
        if finding is not None:
          found[column.name] = finding
  return found


def sampled_findings(
    config: DatasetConfig,
    input_files: Sequence[str],
    sample_rows: int = DEFAULT_SAMPLE_ROWS) -> Dict[str, column_checks.Finding]:
  """sample_findings of a sample of `input_files`."""
  return sample_findings(config, sample_input(config, input_files, sample_rows))


def _combined(
    config: DatasetConfig, train: statistics_pb2.DatasetFeatureStatistics,
    sampled: Mapping[str,
                     column_checks.Finding]) -> List[column_checks.Finding]:
  """At most one finding per feature, in column order: the statistics' first
  (a feature with nothing to learn from needs no other check), then the
  sample's."""
  by_name = {'.'.join(f.path.step) or f.name: f for f in train.features}
  findings = []
  for column in config.feature_columns:
    found = _from_statistics(config, column, by_name.get(column.name),
                             train.num_examples) or sampled.get(column.name)
    if found is not None:
      findings.append(found)
  return findings


def check_features(config: DatasetConfig,
                   train: statistics_pb2.DatasetFeatureStatistics,
                   sample: Optional[Sample]) -> List[column_checks.Finding]:
  """Findings for the config's features, at most one per feature, in
  column order (see _combined)."""
  return _combined(config, train, sample_findings(config, sample))


def check_preprocessed(
    config: DatasetConfig,
    *,
    stats_path: str,
    input_files: Sequence[str],
    sampled: Optional[Mapping[str, column_checks.Finding]] = None,
    sample_rows: int = DEFAULT_SAMPLE_ROWS) -> List[column_checks.Finding]:
  """The checks for one preprocess run; prints each finding as a warning.

  `stats_path`: the train split's TFDV statistics the job wrote
  (stats/train.pb); `input_files`: the files the job read (--input);
  `sampled`: their sampled_findings if already worked out (while the job
  ran), else they are sampled now.
  """
  train = validation.dataset(validation.load_statistics(stats_path))
  if sampled is None:
    sampled = sampled_findings(config, input_files, sample_rows)
  findings = _combined(config, train, sampled)
  for f in findings:
    print(f'preprocess: warning: {f.detail}', file=sys.stderr)
  return findings
