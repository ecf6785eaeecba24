"""python -m trainer.predict: score raw CSV rows with an exported model alone.

    python -m trainer.predict --model-dir MDIR --input raw.csv --output preds.jsonl

MDIR is a model directory (its latest export/<version>/ is used) or one
version directory. Nothing else is read: the dataset config that says how the
raw files look (delimiter, header, missing tokens, column order) travels inside
the export (assets.extra/config.yaml), and all feature processing happens in
the exported graph. That is the point of this command: it proves the export is
self-contained.

Rows are in the dataset's own dialect, with or without the label column (a
label, when present, is echoed in the output so predictions can be compared).
Each data row gives one JSON line, in input order:
  {"source": ..., "line": 12, "probability": 0.83, "class": ">50K", "label": ...}
(that is a binary model; a multiclass one writes "class" and "probabilities"
{class: p, ...}, a regression one "prediction" in the label's units)
and a row that cannot be read (wrong number of fields, a non-number in a
numeric column, bad encoding) gives {"source", "line", "error", "raw"} instead
of stopping the run. A missing value ('?', empty, any configured token) is not
an error: the feature is left out of the tf.Example and the graph imputes it.
Blank and comment lines are skipped. A number that does not fit its column's
type (an integer beyond int64, a float beyond float32, a timestamp past year
9999) and a line longer than the config's max_line_bytes are errors of that
row, as they are quarantined rows in preprocess; a UTF-8 byte-order mark at
the start of a file is not data.
"""

import contextlib
import csv
import json
import os
import sys
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
)

from core import cli
from core import quiet
from trainer import flags

if __name__ == '__main__':
  # `--help` and flag mistakes are answered before the imports below.
  cli.parse_first(flags.predict, 'predict')

# TensorFlow is imported with its start-up noise filtered (core/quiet.py).
with quiet.tensorflow_startup(keras=False):
  import tensorflow as tf

from core import layout
from core import values as raw_values
from core.config import DatasetConfig
from core.errors import UserError

DEFAULT_BATCH_SIZE = flags.DEFAULT_PREDICT_BATCH_SIZE
_UTF8_BOM = b'\xef\xbb\xbf'
# What an error line keeps of a line over the length limit.
_RAW_PREFIX_CHARS = 4096

RowError = raw_values.RowError


class RowEncoder:
  """CSV fields of one row -> serialized raw tf.Example (without the label)."""

  def __init__(self, config: DatasetConfig):
    self.config = config
    self._missing = frozenset(config.missing_values)
    self._label = config.label.column
    self._features = {c.name: c for c in config.feature_columns}
    # Values are read as the preprocess job reads them; a value outside a
    # column's `values:` list is left to the vocabulary, as in serving.
    self.parsers = {
        c.name: raw_values.value_parser(c, check_allowed=False)
        for c in config.columns
    }
    all_names = config.column_names
    self._layouts = {len(all_names): all_names}
    without_label = [n for n in all_names if n != self._label]
    self._layouts.setdefault(len(without_label), without_label)
    self._header: Optional[List[str]] = None

  def set_header(self, fields: Sequence[str]) -> None:
    names = [f.strip() for f in fields]
    unknown = [n for n in names if n not in self.config.column_names]
    if unknown:
      raise UserError(f'header names unknown column(s) {unknown}; the config '
                      f'columns are {", ".join(self.config.column_names)}')
    self._header = names

  def split(self, text: str) -> List[str]:
    opts = self.config.csv
    try:
      return next(
          csv.reader([text],
                     delimiter=opts.delimiter,
                     quotechar=opts.quote_char,
                     skipinitialspace=opts.skip_initial_space,
                     strict=True))
    except csv.Error as e:
      raise RowError(raw_values.MALFORMED_CSV,
                     f'cannot split the line: {e}') from None

  def _names_for(self, fields: Sequence[str]) -> Sequence[str]:
    if self._header is not None:
      if len(fields) != len(self._header):
        raise RowError(
            raw_values.WRONG_ARITY,
            f'expected {len(self._header)} fields (as in the '
            f'header), got {len(fields)}')
      return self._header
    if len(fields) not in self._layouts:
      expected = ' or '.join(str(n) for n in sorted(self._layouts))
      raise RowError(
          raw_values.WRONG_ARITY,
          f'expected {expected} fields (with or without the label '
          f'column {self._label!r}), got {len(fields)}')
    return self._layouts[len(fields)]

  def encode(self, fields: Sequence[str]) -> Tuple[bytes, Optional[str]]:
    """(serialized tf.Example, the row's label or None)."""
    names = self._names_for(fields)
    example = tf.train.Example()
    label = None
    for name, value in zip(names, fields):
      if name == self._label:
        text = value.strip()
        if text and text not in self._missing:
          label = self.config.label.aliases.get(text, text)
        continue
      column = self._features.get(name)
      if column is None or value.strip() in self._missing:
        continue  # not a model input, or missing: the graph imputes it
      parsed = self.parsers[name](value)
      feature = example.features.feature[name]
      if column.is_list:
        feature.bytes_list.value.extend(item.encode('utf-8') for item in parsed)
      elif column.raw_type == 'int':
        feature.int64_list.value.append(parsed)
      elif column.raw_type == 'float':
        feature.float_list.value.append(parsed)
      else:
        feature.bytes_list.value.append(parsed.encode('utf-8'))
    return example.SerializeToString(), label


def _data_lines(path: str, encoder: 'RowEncoder') -> Iterator[Tuple[int, Any]]:
  """(1-based line number, text or a UnicodeDecodeError) per data line of a
  file in the config's dialect: blank and comment lines skipped, the header
  line (when the dialect has one) given to the encoder instead."""
  opts = encoder.config.csv
  header_seen = False
  with tf.io.gfile.GFile(path, 'rb') as f:
    for n, line in enumerate(f, start=1):
      raw = line.rstrip(b'\r\n')
      if n == 1 and raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM):]
      if len(raw) > opts.max_line_bytes:
        yield n, LineTooLong(raw, opts.max_line_bytes, opts.encoding)
        continue
      try:
        text = raw.decode(opts.encoding)
      except UnicodeDecodeError as e:
        yield n, e
        continue
      stripped = text.strip()
      if not stripped or (opts.comment_prefix and
                          stripped.startswith(opts.comment_prefix)):
        continue
      if opts.header and not header_seen:
        header_seen = True
        encoder.set_header(encoder.split(text))
        continue
      yield n, text


class LineTooLong:
  """A line over the config's max_line_bytes: its length and first bytes."""

  def __init__(self, raw: bytes, limit: int, encoding: str):
    self.length = len(raw)
    self.limit = limit
    self.prefix = raw[:_RAW_PREFIX_CHARS].decode(
        encoding, errors='backslashreplace')

  def error(self) -> Dict[str, Any]:
    return {
        'error': f'line is {self.length} bytes; the limit '
                 f'(input.csv.max_line_bytes) is {self.limit}; raw holds '
                 f'its first {_RAW_PREFIX_CHARS} bytes',
        'raw': self.prefix
    }


# ------------------------------------------------- window features of a file


def file_window_values(config: DatasetConfig,
                       path: str) -> Dict[int, Dict[str, float]]:
  """{line number: {window column: value}} over the data rows of `path`.

  The config's window aggregations (pipeline/windows.py) computed over the
  rows of this one file, grouped by entity, as preprocess computes them over
  an input. A row that cannot be read at all (it gets an error line) is in
  no window; a row whose entity or timestamp is missing gets no value (the
  graph imputes it) and is in no other row's window. A window column
  the file itself carries is not read from it: the file's columns are the
  config's input columns.
  """
  # Imported here: Beam and Arrow load only for a config with windows.
  from core import windows  # pylint: disable=g-import-not-at-top
  encoder = RowEncoder(config)
  missing = frozenset(config.missing_values)
  used = {
      n for w in config.windows for n in (w.entity, w.timestamp, w.value) if n
  }

  def typed(name: str, text: str) -> Any:
    text = text.strip()
    if text in missing:
      return None
    try:
      return encoder.parsers[name](text)
    except RowError:  # unreadable is missing here
      return None

  line_numbers, rows = [], []
  for line_no, text in _data_lines(path, encoder):
    if isinstance(text, (UnicodeDecodeError, LineTooLong)):
      continue
    try:
      fields = encoder.split(text)
      names = encoder._names_for(fields)  # pylint: disable=protected-access
      # A row that cannot be scored is in no other row's window, as a
      # quarantined row is in the Beam job.
      encoder.encode(fields)
    except RowError:
      continue
    line_numbers.append(line_no)
    rows.append({n: typed(n, v) for n, v in zip(names, fields) if n in used})
  values = windows.rows_window_values(config.windows, rows)
  return {
      n: {
          k: v for k, v in row.items() if v is not None
      } for n, row in zip(line_numbers, values)
  }


def with_window_values(serialized: bytes,
                       values: Optional[Dict[str, float]]) -> bytes:
  """A serialized raw tf.Example with window columns added."""
  if not values:
    return serialized
  example = tf.train.Example.FromString(serialized)
  for name, value in values.items():
    example.features.feature[name].float_list.value[:] = [value]
  return example.SerializeToString()


class Predictor:
  """The exported model's serving_default signature plus its config."""

  def __init__(self, model_dir: str):
    export = layout.resolve_export(model_dir)
    self.export_dir = export.path
    self.config = export.config
    self.classes = list(self.config.label.classes)
    self._loaded = tf.saved_model.load(self.export_dir)
    self._fn = self._loaded.signatures[layout.ExportDir.DEFAULT_SIGNATURE]

  def predict(self, serialized: Sequence[bytes]) -> Dict[str, Any]:
    """The signature's outputs (numpy) for a batch of raw tf.Examples."""
    out = self._fn(**{
        layout.ExportDir.EXAMPLES_INPUT:
            tf.constant(list(serialized), tf.string)
    })
    return {k: v.numpy() for k, v in out.items()}

  def rows(self, serialized: Sequence[bytes]) -> List[Dict[str, Any]]:
    """One dict per example, from the export's outputs: probability and
    class (a binary classifier: one probability per row), class and
    probabilities per class (multiclass) or prediction (regression)."""
    out = self.predict(serialized)
    return [self._fields(out, i) for i in range(len(serialized))]

  def _fields(self, out: Dict[str, Any], i: int) -> Dict[str, Any]:
    fields: Dict[str, Any] = {}
    if layout.ExportDir.PREDICTIONS in out:
      fields['prediction'] = float(out[layout.ExportDir.PREDICTIONS][i][0])
      return fields
    probabilities = out[layout.ExportDir.PROBABILITIES][i]
    label = out[layout.ExportDir.CLASSES][i]
    label = label.decode('utf-8') if isinstance(label, bytes) else str(label)
    if len(probabilities) == 1:
      return {'probability': float(probabilities[0]), 'class': label}
    return {
        'class': label,
        'probabilities': {
            c: float(p) for c, p in zip(self.classes, probabilities)
        }
    }


def predict_file(predictor: Predictor,
                 path: str,
                 write,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> Dict[str, int]:
  """Scores every data row of `path`, calling write(dict) per row in order."""
  config = predictor.config
  encoder = RowEncoder(config)
  opts = config.csv
  counts = {'rows': 0, 'scored': 0, 'errors': 0}
  pending: List[Dict[str, Any]] = []  # results in input order
  batch: List[Tuple[int, bytes]] = []  # (index into pending, example)
  window_values = (file_window_values(config, path) if config.windows else None)

  def flush():
    if batch:
      fields = predictor.rows([ex for _, ex in batch])
      for (i, _), row in zip(batch, fields):
        pending[i].update(row)
    for result in pending:
      write(result)
    counts['scored'] += len(batch)
    pending.clear()
    batch.clear()

  for line_no, text in _data_lines(path, encoder):
    if isinstance(text, UnicodeDecodeError):
      counts['rows'] += 1
      counts['errors'] += 1
      pending.append({
          'source': path,
          'line': line_no,
          'error': f'not valid {opts.encoding} at byte '
                   f'{text.start}',
          'raw': None
      })
      continue
    if isinstance(text, LineTooLong):
      counts['rows'] += 1
      counts['errors'] += 1
      pending.append(dict({'source': path, 'line': line_no}, **text.error()))
      continue
    counts['rows'] += 1
    result: Dict[str, Any] = {'source': path, 'line': line_no}
    try:
      serialized, label = encoder.encode(encoder.split(text))
    except RowError as e:
      counts['errors'] += 1
      result.update({'error': str(e), 'raw': text})
      pending.append(result)
      continue
    if window_values is not None:
      serialized = with_window_values(serialized, window_values.get(line_no))
    if label is not None:
      result['label'] = label
    pending.append(result)
    batch.append((len(pending) - 1, serialized))
    if len(batch) >= batch_size:
      flush()
  flush()
  return counts


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  args = flags.predict(argv)
  files = sorted(tf.io.gfile.glob(args.input))
  if not files:
    raise UserError(f'--input {args.input}: no file matches')
  predictor = Predictor(args.model_dir)
  if predictor.config.format != 'csv':
    raise UserError(
        f'the model\'s dataset config reads {predictor.config.format}'
        ' files; trainer.predict reads CSV rows only')
  # Row counts, and the export that scored them ('export_dir').
  totals: Dict[str, Any] = {'rows': 0, 'scored': 0, 'errors': 0}
  with _output(args.output) as out:
    for path in files:
      counts = predict_file(predictor, path,
                            lambda r: out.write(json.dumps(r) + '\n'),
                            args.batch_size)
      for k, v in counts.items():
        totals[k] += v
  totals['export_dir'] = predictor.export_dir
  return totals


@contextlib.contextmanager
def _output(path: str) -> Iterator[Any]:
  """Where the JSON lines go: stdout for '-', else a file that appears
  whole or not at all.

  The lines are written to PATH.tmp-<pid> and renamed to PATH at the end, so
  a run stopped or failed half-way leaves no predictions file that looks
  complete (nor the partial one). A path that is not a regular file (a pipe,
  /dev/stdout) is written directly.
  """
  if path == '-':
    yield sys.stdout
    return
  local = '://' not in path
  if local and os.path.isdir(path):
    raise UserError(f'--output {path}: is a directory; give a file name')
  if local and os.path.exists(path) and not os.path.isfile(path):
    with _opened(path, lambda: open(path, 'w', encoding='utf-8')) as f:
      yield f
    return
  staging = f'{path}.tmp-{os.getpid()}'
  try:
    with _opened(path, lambda: _gfile_opened(staging)) as f:
      yield f
    cli.check_stop()  # a stop that a destructor swallowed
    tf.io.gfile.rename(staging, path, overwrite=True)
  except BaseException:
    if tf.io.gfile.exists(staging):
      tf.io.gfile.remove(staging)
    raise


def _opened(path: str, open_file: Callable[[], Any]) -> Any:
  """`open_file()`; its failure is one line naming --output, before any
  row is scored."""
  try:
    return open_file()
  except (OSError, tf.errors.OpError) as e:
    reason = getattr(e, 'strerror', None) or getattr(e, 'message', None) or e
    raise UserError(f'--output {path}: cannot be written ({reason})') from None


def _gfile_opened(path: str) -> Any:
  f = tf.io.gfile.GFile(path, 'w')
  f.write('')  # a GFile opens the file at its first write
  return f


def main(argv: Optional[Sequence[str]] = None) -> int:
  return cli.run('predict', lambda: _main(argv))


def _main(argv: Optional[Sequence[str]]) -> int:
  totals = run(argv)
  print(
      f'predict: {totals["rows"]} rows, {totals["scored"]} scored, '
      f'{totals["errors"]} with errors (model {totals["export_dir"]})',
      file=sys.stderr)
  return cli.OK


if __name__ == '__main__':
  quiet.filter_runtime_noise()
  cli.finish(main())
