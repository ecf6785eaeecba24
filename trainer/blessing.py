"""Is a candidate model good enough to serve? Scoring and the decision.

The candidate and the served model (the baseline) score the same labelled
raw rows through their serving_default signature, the route of a served
request. Each model is judged by its own head (trainer/heads/) and config:
its metrics, its threshold, its classes. The candidate is BLESSED when every
check of the config's `validation:` section passes (core/config.py's
Blessing):

  metric    absolute rules on the candidate alone (min, max)
  change    rules against the baseline on the same rows (max_decrease,
            max_increase); skipped without a baseline
  slice     change rules per slice of the configured raw columns, for the
            slices with at least min_rows rows; skipped without a baseline
  sanity    same signatures, raw inputs and label as the baseline (unless
            allow_signature_change), finite outputs, and a batch of
            latency.batch_rows rows answered within latency.max_ms

The decision is a plain document (JSON-ready) that trainer/push.py writes
beside the candidate, appends to the push log and prints
(trainer/blessing_report.py).
"""

import dataclasses
import math
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from core.config import Blessing
from core.config import DatasetConfig
from core.config import MetricRule
from core.errors import ConfigError
from core.layout import ExportDir
from trainer import heads
from trainer import labelled_rows
from trainer import slices

BLESSED = 'BLESSED'
NOT_BLESSED = 'NOT_BLESSED'
_BATCH_ROWS = 1024
_LATENCY_CALLS = 5  # timed calls; the median is the latency
# Table rows of a head that are not qualities of the model.
_NOT_METRICS = ('rows', 'threshold')


@dataclasses.dataclass
class Scored:
  """One model's outputs on the rows, and what it is judged by."""
  export: ExportDir
  config: DatasetConfig
  head: heads.Head
  threshold: float
  outputs: Dict[str, np.ndarray]  # serving_default output -> one per row
  signatures: Dict[str, Any]  # name -> inputs and outputs (dtype, shape)
  latency_ms: float  # median of timed calls on latency_batch_rows rows

  @property
  def predictions(self) -> np.ndarray:
    """The output the head's metrics read (probabilities, predictions)."""
    out = self.outputs[self.head.output_name]
    return out.reshape(-1) if out.ndim == 2 and out.shape[1] == 1 else out


def scoring_head(config: DatasetConfig) -> heads.Head:
  """The head that judges an export's outputs. They are in the label's
  units already (a log-target model applies expm1 in its graph), as the raw
  labels are, so the head reads both as a model without a log target."""
  label = dataclasses.replace(config.label, log_target=False)
  return heads.make_head(dataclasses.replace(config, label=label))


def metric_names(head: heads.Head) -> List[str]:
  """The metrics a head reports that a rule may name."""
  return [k for k, _, _ in head.table_rows() if k not in _NOT_METRICS]


def check_rules(blessing: Blessing, head: heads.Head) -> None:
  """ConfigError naming the key when a rule names a metric the model does
  not report (the metrics depend on the label task)."""
  names = metric_names(head)
  for where, rules in (('validation.metrics', blessing.metrics),
                       ('validation.slices.metrics', blessing.slice_metrics)):
    for rule in rules:
      if rule.metric not in names:
        raise ConfigError(
            f'{where}.{rule.metric}: not a metric of a {head.task} model; '
            f'choose one of {", ".join(names)}')


def _signatures(loaded: Any) -> Dict[str, Any]:
  """What a client relies on: each signature's inputs and outputs."""

  def specs(structure: Mapping[str, tf.TensorSpec]) -> Dict[str, str]:
    return {
        name: f'{spec.dtype.name} {spec.shape.as_list()}'
        for name, spec in sorted(structure.items())
    }

  return {
      name: {
          'inputs': specs(fn.structured_input_signature[1]),
          'outputs': specs(fn.structured_outputs)
      } for name, fn in sorted(loaded.signatures.items())
  }


def score(export: ExportDir, rows: labelled_rows.LabelledRows,
          latency_batch_rows: int) -> Scored:
  """Loads the export and scores every row; times a batch afterwards (the
  graph is warm by then, as it is once a server has swapped it in)."""
  loaded = tf.saved_model.load(export.path)
  fn = loaded.signatures[ExportDir.DEFAULT_SIGNATURE]

  def call(batch: Sequence[bytes]) -> Dict[str, np.ndarray]:
    out = fn(**{ExportDir.EXAMPLES_INPUT: tf.constant(list(batch), tf.string)})
    return {k: v.numpy() for k, v in out.items()}

  parts: Dict[str, List[np.ndarray]] = {}
  for start in range(0, len(rows.examples), _BATCH_ROWS):
    for name, value in call(rows.examples[start:start + _BATCH_ROWS]).items():
      parts.setdefault(name, []).append(value)
  outputs = {k: np.concatenate(v) for k, v in parts.items()}
  batch = (rows.examples *
           (latency_batch_rows // len(rows) + 1))[:latency_batch_rows]
  seconds = []
  for _ in range(_LATENCY_CALLS):
    began = time.perf_counter()
    call(batch)
    seconds.append(time.perf_counter() - began)
  config = export.config
  threshold = export.metadata.get('threshold')
  return Scored(export, config, scoring_head(config),
                0.5 if threshold is None else float(threshold), outputs,
                _signatures(loaded), float(np.median(seconds) * 1000.0))


# ------------------------------------------------------------------ decide


def _metrics(model: Scored,
             y: np.ndarray,
             mask: Optional[np.ndarray] = None) -> Dict[str, Any]:
  p = model.predictions
  if mask is not None:
    y, p = y[mask], p[mask]
  return model.head.metrics(y, p, model.threshold)


def _scalars(metrics: Mapping[str, Any],
             names: Sequence[str]) -> Dict[str, float]:
  return {
      k: float(metrics[k])
      for k in names
      if isinstance(metrics.get(k), (int, float))
  }


def _finite(x: Optional[float]) -> bool:
  return x is not None and math.isfinite(x)


def _check(kind: str, name: str, passed: bool, detail: str,
           **values: Any) -> Dict[str, Any]:
  return dict(
      {
          'check': kind,
          'name': name,
          'passed': bool(passed),
          'detail': detail
      }, **values)


def _absolute_checks(rule: MetricRule, value: float) -> List[Dict[str, Any]]:
  out = []
  for limit, sign, ok in ((rule.minimum, '>=', lambda v, l: v >= l),
                          (rule.maximum, '<=', lambda v, l: v <= l)):
    if limit is None:
      continue
    passed = _finite(value) and ok(value, limit)
    out.append(
        _check(
            'metric',
            rule.metric,
            passed,
            f'{rule.metric} {_fmt(value)} (rule {sign} {limit:g})',
            candidate=value,
            rule=f'{sign} {limit:g}'))
  return out


def _change_checks(rule: MetricRule,
                   value: float,
                   base: float,
                   kind: str,
                   where: str = '') -> List[Dict[str, Any]]:
  """Checks of `rule`'s change limits; `where` names a slice."""
  out = []
  name = f'{where} {rule.metric}'.strip()
  change = value - base if _finite(value) and _finite(base) else math.nan
  for limit, text, ok in ((rule.max_decrease, 'lower', lambda c, l: c >= -l),
                          (rule.max_increase, 'higher', lambda c, l: c <= l)):
    if limit is None:
      continue
    passed = _finite(change) and ok(change, limit)
    out.append(
        _check(
            kind,
            name,
            passed,
            f'{name} {_fmt(value)} vs {_fmt(base)} served ({_fmt(change, True)}; '
            f'at most {limit:g} {text} allowed)',
            candidate=value,
            baseline=base,
            change=change,
            rule=f'{text} by <= {limit:g}'))
  return out


def _fmt(value: Optional[float], signed: bool = False) -> str:
  if not _finite(value):
    return 'n/a'
  return f'{value:+.4f}' if signed else f'{value:.4f}'


def _slice_plan(rows: labelled_rows.LabelledRows, config: DatasetConfig,
                blessing: Blessing) -> Dict[str, Any]:
  """column -> (each row's slice name, the slices in order): numeric columns
  in quantile buckets of these rows' values (low to high), string columns
  by value (the most common ones first, the rest as one '(other)' slice),
  as the evaluation report slices them (trainer/slices.py)."""
  plan = {}
  columns = rows.columns(config, blessing.slice_columns)
  for column in blessing.slice_columns:
    values = columns[column]
    if values.dtype == object:
      plain = slices.categorical_slice_names(values, config)
      kept, counts = np.unique(
          plain[plain != slices.MISSING], return_counts=True)
      top = [
          str(v) for v, _ in sorted(
              zip(kept, counts, strict=True), key=lambda t: (-t[1], t[0]))
      ]
      keep = top[:slices.MAX_CATEGORIES]
      names = slices.categorical_slice_names(
          values, config, keep if len(top) > len(keep) else None)
      kind, edges = 'string', None
    else:
      edges = slices.numeric_edges(values, blessing.slice_buckets)
      names = slices.numeric_slice_names(values, edges)
      kind, keep = 'number', None
    # pylint: disable-next=protected-access
    plan[column] = (names, slices._slice_order(names, kind, edges, keep))
  return plan


def _comparable(candidate: Scored, baseline: Scored) -> List[str]:
  """What differs between the two models that a client or a comparison
  relies on: signatures (inputs, outputs) and the label."""
  changes = []
  a, b = candidate.signatures, baseline.signatures
  for name in sorted(set(a) | set(b)):
    if name not in a or name not in b:
      changes.append(f'signature {name} '
                     f'{"added" if name in a else "removed"}')
      continue
    for part in ('inputs', 'outputs'):
      new, old = a[name][part], b[name][part]
      for key in sorted(set(new) | set(old)):
        if key not in old:
          changes.append(f'{name} {part[:-1]} {key!r} added ({new[key]})')
        elif key not in new:
          changes.append(f'{name} {part[:-1]} {key!r} removed')
        elif new[key] != old[key]:
          changes.append(f'{name} {part[:-1]} {key!r} changed from '
                         f'{old[key]} to {new[key]}')
  la, lb = candidate.config.label, baseline.config.label
  if (la.task, la.classes, la.positive) != (lb.task, lb.classes, lb.positive):
    changes.append(f'label changed from {lb.task} {list(lb.classes)} to '
                   f'{la.task} {list(la.classes)}')
  return changes


def decide(blessing: Blessing, rows: labelled_rows.LabelledRows,
           candidate: Scored, baseline: Optional[Scored]) -> Dict[str, Any]:
  """The decision document: BLESSED or NOT_BLESSED, every check with its
  values, both models' metrics overall and per slice."""
  check_rules(blessing, candidate.head)
  names = metric_names(candidate.head)
  y_cand = labelled_rows.targets(candidate.config, rows.labels)
  cand_all = _metrics(candidate, y_cand)
  cand = _scalars(cand_all, names)
  checks: List[Dict[str, Any]] = []
  notes: List[str] = []

  # Sanity: outputs, latency, signatures.
  bad = {
      k: int(np.sum(~np.isfinite(v)))
      for k, v in candidate.outputs.items()
      if np.issubdtype(v.dtype, np.floating)
  }
  bad_rows = sum(bad.values())
  checks.append(
      _check(
          'sanity',
          'finite outputs',
          bad_rows == 0,
          'every output finite' if not bad_rows else 'non-finite outputs: ' +
          ', '.join(f'{k} {n:,d}' for k, n in bad.items() if n),
          candidate=float(len(rows) - bad_rows)))
  checks.append(
      _check(
          'sanity',
          'latency',
          candidate.latency_ms <= blessing.max_latency_ms,
          f'{blessing.latency_batch_rows} rows answered in '
          f'{candidate.latency_ms:.1f} ms (limit {blessing.max_latency_ms:g} ms)',
          candidate=candidate.latency_ms,
          baseline=baseline.latency_ms if baseline else None,
          rule=f'<= {blessing.max_latency_ms:g} ms'))
  changes = _comparable(candidate, baseline) if baseline else []
  label_changed = any(c.startswith('label ') for c in changes)
  if baseline is None:
    notes.append('no served model yet: absolute rules and sanity checks '
                 'only')
  else:
    allowed = blessing.allow_signature_change
    checks.append(
        _check(
            'sanity',
            'signatures',
            not changes or allowed,
            ('same signatures, raw inputs and label as the served model'
             if not changes else '; '.join(changes) +
             (' (allowed by validation.allow_signature_change)' if allowed else
              ' (set validation.allow_signature_change: true to allow)')),
            changes=changes))
  if not blessing.metrics and not blessing.slice_metrics:
    notes.append('no metric rules (validation.metrics): sanity checks only')

  # Metrics overall.
  base = {}
  compare = baseline is not None and not label_changed
  if compare and baseline is not None:
    y_base = labelled_rows.targets(baseline.config, rows.labels)
    base = _scalars(_metrics(baseline, y_base), metric_names(baseline.head))
  elif label_changed:
    # Its classes are not these rows' classes: no metrics to compare.
    notes.append('the label changed: no comparison with the served model')
  for rule in blessing.metrics:
    value = cand.get(rule.metric, math.nan)
    checks.extend(_absolute_checks(rule, value))
    if compare:
      checks.extend(
          _change_checks(rule, value, base.get(rule.metric, math.nan),
                         'change'))

  # Slices: change rules where both models have a value.
  slice_rows: Dict[str, List[Dict[str, Any]]] = {}
  if blessing.slice_columns:
    plan = _slice_plan(rows, candidate.config, blessing)
    gated_names = [r.metric for r in blessing.slice_metrics]
    for column, (per_row, order) in plan.items():
      out = []
      for name in order:
        mask = per_row == name
        n = int(mask.sum())
        entry: Dict[str, Any] = {
            'slice':
                str(name),
            'rows':
                n,
            'candidate':
                _scalars(_metrics(candidate, y_cand, mask), gated_names)
        }
        gated = compare and n >= blessing.slice_min_rows
        if compare and baseline is not None:
          entry['baseline'] = _scalars(
              _metrics(baseline, y_base, mask), gated_names)
        entry['gated'] = gated
        if gated:
          for rule in blessing.slice_metrics:
            value = entry['candidate'].get(rule.metric, math.nan)
            old = entry['baseline'].get(rule.metric, math.nan)
            if not (_finite(value) and _finite(old)):
              continue  # e.g. no ROC AUC in a slice of one class
            checks.extend(
                _change_checks(rule, value, old, 'slice', f'{column}={name}'))
        out.append(entry)
      slice_rows[column] = out

  failed = [c['detail'] for c in checks if not c['passed']]
  return {
      'decision':
          NOT_BLESSED if failed else BLESSED,
      'reasons':
          failed,
      'notes':
          notes,
      'checks':
          checks,
      'data': {
          'source': rows.source,
          'rows': len(rows),
          'skipped': dict(rows.skipped)
      },
      'candidate':
          _model_doc(candidate, cand),
      'baseline':
          _model_doc(baseline, base) if baseline else None,
      'slices': {
          'columns': list(blessing.slice_columns),
          'min_rows': blessing.slice_min_rows,
          'rows': slice_rows
      },
      'task':
          candidate.head.task,
      'table_rows': [
          list(r) for r in candidate.head.table_rows() if r[0] in cand
      ],
  }


def _model_doc(model: Scored, metrics: Mapping[str, float]) -> Dict[str, Any]:
  return {
      'path': model.export.path,
      'version': model.export.version,
      'created': model.export.metadata.get('created'),
      'threshold': model.threshold,
      'latency_ms': model.latency_ms,
      'metrics': dict(metrics)
  }
