"""Drift and skew decisions sized to the sample, on top of TFDV.

TFDV measures how far a feature's distribution moved (L-infinity distance for
strings, Jensen-Shannon divergence for numbers) and flags it when the distance
is over the schema's threshold. A distance measured on a sample is never 0: on
a 200-row eval split, sampling noise alone is larger than thresholds chosen
for thousands of rows, so a fixed threshold flags random splits of one file,
and one that is large enough for small samples misses real shifts in large
ones. Several schema rules have the same weakness: a presence.min_fraction or
a min_domain_mass is a share that a small sample crosses by chance.

This module keeps TFDV's distances, thresholds and Anomalies protos, and adds
the question TFDV does not ask: could chance alone give this at these sample
sizes? For each comparison it runs a two-sample test on what the TFDV
statistics of both sides carry:

  - strings: a chi-squared test of homogeneity on the value counts (the rank
    histogram holds every value's count);
  - numbers: the same test on counts in bins ending at the quantile
    boundaries, where a side's cumulative counts are exact; the other side's
    counts there are read off its own quantile histogram only where that is
    safe (not across a spike, not in the tail buckets), on each side's
    boundaries in turn, keeping the smaller statistic; and a
    Kolmogorov-Smirnov test on the gap the two histograms prove without any
    reading in between, which sees a spike move. The two p-values are
    Bonferroni-combined;
  - whether the value is present at all (the "missing share"): TFDV's
    distances leave missing values out, so a column that goes 20% missing
    does not move them; the share is compared with Fisher's exact test (or
    chi-squared when every cell expects 5 or more), its distance measured in
    the comparator's own unit and held to the comparator's threshold;
  - presence.min_fraction and min_domain_mass on one dataset: a one-sided
    binomial test of the missing (out-of-domain) count against the share the
    schema allows.

Categories and bins too rare for the chi-squared approximation (fewer than 5
expected rows in the smaller sample) are pooled first. Values of multivalent
(list) features are not independent draws, so their statistic is scaled down
by rows / values.

A finding is an anomaly only when it is both significant and over the
schema's threshold (as TFDV holds it), which keeps its meaning: the smallest
effect worth flagging. Significance is judged for all the tests of one run together with
Holm's step-down correction, so that the chance that a run on unchanged data
flags anything at all is at most the false-alarm rate (default 1%).
"""

import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypeAlias

import numpy as np
import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2

DEFAULT_FALSE_ALARM_RATE = 0.01
# Cells expecting fewer rows than this make the chi-squared approximation
# anti-conservative; rarer categories and bins are pooled.
MIN_EXPECTED = 5.0
# A histogram is read between its boundaries only where its bucket spans at
# least this many points of the data's value grid.
MIN_GRID_POINTS = 50
# Bins of numbers hold at least this share of both sides together, so that
# a histogram read between its boundaries errs by little next to the bin.
MIN_BIN_SHARE = 0.05
# Below this many values on the smaller side, count tables get a Monte Carlo
# p-value from this many tables with the same margins.
EXACT_BELOW = 1000
MONTE_CARLO_TABLES = 20_000
# Sketch error allowed for in the bounds a quantile histogram proves.
SKETCH_SLACK = 0.005

# Verdicts.
OK = 'ok'  # under the threshold, and within chance
SMALL = 'small'  # significant, but under the threshold
CHANCE = 'chance'  # over the threshold, but within chance at these sizes
ANOMALY = 'anomaly'  # significant and over the threshold
VERDICT_TEXT = {
    OK: 'ok',
    SMALL: 'ok (small)',
    CHANCE: 'ok (chance)',
    ANOMALY: 'ANOMALY'
}
LEGEND = ('ok (chance): over the threshold, but no more than chance gives at '
          'these sample sizes; ok (small): a real difference, smaller than '
          'the threshold')

# Checks.
MISSING_SHARE = 'missing share'
PRESENCE = 'presence'
DOMAIN = 'domain'
L_INFINITY = 'L-infinity'
JENSEN_SHANNON = 'Jensen-Shannon divergence'
MISSING_SHARE_TYPE = 'MISSING_SHARE_CHANGED'  # AnomalyRow.type of our own

_AnomalyType = anomalies_pb2.AnomalyInfo.Type
_PRESENCE_TYPES = frozenset(
    _AnomalyType.Value(n) for n in ('FEATURE_TYPE_LOW_FRACTION_PRESENT',))
_DOMAIN_TYPES = frozenset(
    _AnomalyType.Value(n) for n in ('ENUM_TYPE_UNEXPECTED_STRING_VALUES',))

Histogram: TypeAlias = statistics_pb2.Histogram
FeatureStats: TypeAlias = statistics_pb2.FeatureNameStatistics
DatasetStats: TypeAlias = statistics_pb2.DatasetFeatureStatistics


@dataclasses.dataclass
class Decision:
  """One tested finding: what was measured, what chance allows, the verdict.

  `baseline` and `compared` name the datasets (train and eval, training and
  serving); a schema rule on one dataset has no baseline. `distance` and
  `threshold` are in the check's unit: TFDV's distance and the schema's
  threshold for a comparator, the observed and allowed share for a rule.
  """
  feature: str
  check: str
  baseline: str
  compared: str
  baseline_rows: int
  compared_rows: int
  distance: float
  threshold: float
  test: str = ''
  p_value: Optional[float] = None
  level: Optional[float] = None  # the p-value it had to beat (Holm)
  verdict: str = OK
  detail: str = ''  # what was counted, in words

  @property
  def flagged(self) -> bool:
    return self.verdict == ANOMALY

  @property
  def over_threshold(self) -> bool:
    return self.distance > self.threshold

  def to_json(self) -> Dict[str, Any]:
    return {
        'feature': self.feature,
        'comparator': self.check,
        'baseline': self.baseline,
        'compared': self.compared,
        'baseline_rows': self.baseline_rows,
        'compared_rows': self.compared_rows,
        'value': self.distance,
        'threshold': self.threshold,
        'test': self.test,
        'p_value': self.p_value,
        'level': self.level,
        'verdict': self.verdict,
        'flagged': self.flagged,
        'detail': self.detail
    }


# ------------------------------------------------------------ distributions


def feature_map(ds: DatasetStats) -> Dict[str, FeatureStats]:
  return {'.'.join(f.path.step) or f.name: f for f in ds.features}


def common(f: FeatureStats) -> statistics_pb2.CommonStatistics:
  kind = f.WhichOneof('stats')
  if kind in ('num_stats', 'string_stats', 'bytes_stats'):
    return getattr(f, kind).common_stats
  return statistics_pb2.CommonStatistics()


def value_counts(f: FeatureStats) -> Tuple[Dict[str, float], float]:
  """(count per value, count of values left out of the histogram)."""
  ss = f.string_stats
  total = float(ss.common_stats.tot_num_values or
                ss.common_stats.num_non_missing)
  counts: Dict[str, float] = {}
  if ss.rank_histogram.buckets:
    for b in ss.rank_histogram.buckets:
      counts[b.label] = counts.get(b.label, 0.0) + float(b.sample_count)
  else:
    for v in ss.top_values:
      counts[v.value] = counts.get(v.value, 0.0) + float(v.frequency)
  return counts, max(0.0, total - sum(counts.values()))


@dataclasses.dataclass
class Cdf:
  """What a quantile histogram says for sure about a side's distribution.

  TFDV's quantile histogram holds, for each distinct boundary, the exact
  number of values up to and including it: the cumulative share `cum` is
  exact at the points `xs` (the first is the minimum, with nothing below
  it). A boundary repeated over k zero-width buckets is a value carrying at
  least k buckets' worth of the values; below it lies no more than the
  bucket before the repeats: `below` bounds the share under each point.
  """
  xs: np.ndarray
  cum: np.ndarray
  below: np.ndarray  # upper bound of the share strictly below each point
  values: float
  spiky: bool = False  # some value carries a whole bucket

  def bounds(self, y: float) -> Tuple[float, float]:
    """(lowest, highest) cumulative share up to and including y."""
    if y < self.xs[0]:
      return 0.0, 0.0
    if y >= self.xs[-1]:
      return 1.0, 1.0
    j = int(np.searchsorted(self.xs, y, side='right')) - 1
    if j > 0 and self.xs[j] == y:  # xs[0] is the minimum, from below
      return self.cum[j], self.cum[j]
    return self.cum[j], min(self.cum[j + 1], self.below[j + 1])

  def at(self, points: np.ndarray) -> np.ndarray:
    """The cumulative share at `points`, read linearly between boundaries."""
    out = np.empty(len(points))
    for i, y in enumerate(points):
      if y < self.xs[0]:
        out[i] = 0.0
      elif y >= self.xs[-1]:
        out[i] = 1.0
      else:
        j = int(np.searchsorted(self.xs, y, side='right')) - 1
        if self.xs[j] == y:
          out[i] = self.cum[j]
        else:
          out[i] = self.cum[j] + (y - self.xs[j]) / (
              self.xs[j + 1] - self.xs[j]) * (
                  self.cum[j + 1] - self.cum[j])
    return out


def quantile_cdf(f: FeatureStats) -> Optional[Cdf]:
  """The Cdf of a numeric feature's statistics, or None without values."""
  hist = next(
      (h for h in f.num_stats.histograms if h.type == Histogram.QUANTILES),
      None)
  if hist is None or not hist.buckets:
    return None
  total = sum(b.sample_count for b in hist.buckets)
  if total <= 0:
    return None
  xs, cum, below = [hist.buckets[0].low_value], [0.0], [0.0]
  running, block = 0.0, 0.0
  for b in hist.buckets:
    if b.high_value == xs[-1] and len(xs) > 1:
      running += b.sample_count
      cum[-1] = running / total
      # The first bucket of a repeated boundary is all that may lie under it.
      below[-1] = min(below[-1], block)
    else:
      block = (running + b.sample_count) / total
      running += b.sample_count
      xs.append(b.high_value)
      cum.append(running / total)
      below.append(running / total)
  cum[-1] = below[-1] = 1.0 if len(xs) > 1 else cum[-1]
  spiky = any(b.low_value == b.high_value for b in hist.buckets)
  return Cdf(
      np.array(xs, float), np.array(cum, float), np.array(below, float),
      float(total), spiky)


# ---------------------------------------------------------------- the tests


def chi2_sf(statistics: Sequence[float], dofs: Sequence[int]) -> List[float]:
  """P(chi-squared with dof >= statistic), as TensorFlow computes it."""
  if not statistics:
    return []
  a = tf.constant([d / 2.0 for d in dofs], tf.float64)
  x = tf.constant([max(0.0, s) / 2.0 for s in statistics], tf.float64)
  return [float(v) for v in tf.math.igammac(a, x).numpy()]


def binomial_sf(k: float, n: float, p: float) -> float:
  """P(X >= k) for X ~ Binomial(n, p); k rounded to a whole count."""
  k = int(round(k))
  n = int(round(n))
  if k <= 0:
    return 1.0
  if k > n or p <= 0.0:
    return 0.0
  if p >= 1.0:
    return 1.0
  return float(
      tf.math.betainc(
          tf.constant(float(k), tf.float64),
          tf.constant(float(n - k + 1), tf.float64),
          tf.constant(p, tf.float64)).numpy())


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
  """Two-sided Fisher exact test of the 2x2 table [[a, b], [c, d]]."""
  row1, col1, n = a + b, a + c, a + b + c + d
  lo, hi = max(0, col1 - (n - row1)), min(row1, col1)
  base = (
      math.lgamma(row1 + 1) + math.lgamma(n - row1 + 1) +
      math.lgamma(col1 + 1) + math.lgamma(n - col1 + 1) - math.lgamma(n + 1))

  def logp(x):
    return base - (
        math.lgamma(x + 1) + math.lgamma(row1 - x + 1) +
        math.lgamma(col1 - x + 1) + math.lgamma(n - row1 - col1 + x + 1))

  observed = logp(a)
  total = 0.0
  for x in range(lo, hi + 1):
    lp = logp(x)
    if lp <= observed + 1e-7:
      total += math.exp(lp)
  return min(1.0, total)


def _pool(a: np.ndarray, b: np.ndarray,
          adjacent: bool) -> Tuple[np.ndarray, np.ndarray]:
  """Merges cells until each expects MIN_EXPECTED in the smaller sample.

  Bins of numbers merge with their neighbours (`adjacent`); categories merge
  from the rarest up.
  """
  na, nb = a.sum(), b.sum()
  small = min(na, nb)
  if small <= 0:
    return a[:0], b[:0]
  share = (a + b) / (na + nb)
  if adjacent:
    out_a, out_b, acc_a, acc_b = [], [], 0.0, 0.0
    for x, y in zip(a, b):
      acc_a += x
      acc_b += y
      share_acc = (acc_a + acc_b) / (na + nb)
      if small * share_acc >= MIN_EXPECTED and share_acc >= MIN_BIN_SHARE:
        out_a.append(acc_a)
        out_b.append(acc_b)
        acc_a = acc_b = 0.0
    if acc_a or acc_b:
      if out_a:
        out_a[-1] += acc_a
        out_b[-1] += acc_b
      else:
        out_a, out_b = [acc_a], [acc_b]
    return np.array(out_a), np.array(out_b)
  order = np.argsort(-share, kind='stable')
  keep = [i for i in order if small * share[i] >= MIN_EXPECTED]
  rest = [i for i in order if small * share[i] < MIN_EXPECTED]
  out_a = [a[i] for i in keep]
  out_b = [b[i] for i in keep]
  if rest:
    ra, rb = sum(a[i] for i in rest), sum(b[i] for i in rest)
    if small * (ra + rb) / (na + nb) >= MIN_EXPECTED or not out_a:
      out_a.append(ra)
      out_b.append(rb)
    else:
      out_a[-1] += ra
      out_b[-1] += rb
  return np.array(out_a), np.array(out_b)


def chi2_statistic(a: np.ndarray, b: np.ndarray) -> Tuple[float, int]:
  """Pearson's statistic of homogeneity of two count vectors, and its dof."""
  na, nb = a.sum(), b.sum()
  keep = (a + b) > 0
  a, b = a[keep], b[keep]
  if len(a) < 2 or na <= 0 or nb <= 0:
    return 0.0, 0
  share = (a + b) / (na + nb)
  ea, eb = na * share, nb * share
  stat = float(((a - ea)**2 / ea).sum() + ((b - eb)**2 / eb).sum())
  return stat, len(a) - 1


def table_p_value(a: np.ndarray,
                  b: np.ndarray,
                  effect: float = 1.0) -> Optional[float]:
  """p-value of the homogeneity of two count vectors, or None (one cell).

  Chi-squared when the smaller side has EXACT_BELOW values or more. Below,
  the chi-squared tail is too light where the decision is made (p-values of
  1e-4 and less, after the correction for many features), so a p-value
  under 0.01 is replaced by the share of tables at least as far apart among
  MONTE_CARLO_TABLES drawn with the same margins (both sides' totals and each
  cell's total): exact up to that resolution, and the same for the same
  counts.
  """
  stat, dof = chi2_statistic(a, b)
  if not dof:
    return None
  p = chi2_sf([stat * effect], [dof])[0]
  if effect < 1 or min(a.sum(), b.sum()) >= EXACT_BELOW or p >= 0.01:
    return p
  a, b = np.round(a).astype(np.int64), np.round(b).astype(np.int64)
  keep = (a + b) > 0
  a, b = a[keep], b[keep]
  stat, dof = chi2_statistic(a.astype(float), b.astype(float))
  if not dof:
    return None
  pooled = a + b
  rng = np.random.default_rng([int(x) for x in np.concatenate([a, b])])
  drawn = rng.multivariate_hypergeometric(
      pooled, int(b.sum()), size=MONTE_CARLO_TABLES)
  share = pooled / pooled.sum()
  ea, eb = a.sum() * share, b.sum() * share
  sims = (((pooled - drawn) - ea)**2 / ea).sum(axis=1) + (
      (drawn - eb)**2 / eb).sum(axis=1)
  return float((1 + np.sum(sims >= stat - 1e-9)) / (MONTE_CARLO_TABLES + 1))


def _design_effect(fa: FeatureStats, fb: FeatureStats) -> float:
  """rows / values over both sides: 1 for one value per row, less for lists,
  whose values are not independent draws."""
  ca, cb = common(fa), common(fb)
  rows = ca.num_non_missing + cb.num_non_missing
  values = (ca.tot_num_values or ca.num_non_missing) + (
      cb.tot_num_values or cb.num_non_missing)
  return min(1.0, rows / values) if values else 1.0


def categorical_test(fa: FeatureStats, fb: FeatureStats) -> Optional[float]:
  """p-value of the chi-squared test on the value counts, or None."""
  ca, rest_a = value_counts(fa)
  cb, rest_b = value_counts(fb)
  labels = sorted(set(ca) | set(cb))
  a = np.array([ca.get(v, 0.0) for v in labels] + [rest_a])
  b = np.array([cb.get(v, 0.0) for v in labels] + [rest_b])
  a, b = _pool(a, b, adjacent=False)
  return table_p_value(a, b, _design_effect(fa, fb))


def _lattice_step(*points: np.ndarray) -> float:
  """The grid the data's values lie on (1 for whole numbers, 0.01 for
  cents), or 0 for values on no decimal grid, as far as the boundaries of
  both sides show."""
  xs = np.unique(np.concatenate(points))
  for digits in range(7):
    scaled = xs * 10.0**digits
    if np.all(
        np.abs(scaled - np.round(scaled)) <= 1e-5 *
        np.maximum(1.0, np.abs(scaled))):
      return 10.0**-digits
  return 0.0


def _readable(c: float, other: Cdf, step: float, smooth: bool) -> bool:
  """Whether the other side's cumulative share at `c` is known well enough.

  It is exact at its own boundaries and outside its range. Between two of
  them it is read linearly, which is close when the values spread over many
  grid points there. It is not where a few values carry the buckets: in data
  with a visible spike (a value filling a whole bucket, such as 40 hours a
  week or a zero amount) smaller spikes hide in the other buckets, and on a
  coarse grid (whole years of age) a bucket holds a few values only. Nor is
  it in the first or last bucket, which reach out to the extremes: a single
  outlier sets their width.
  """
  xs = other.xs
  if c < xs[0] or c >= xs[-1] or np.any(xs[1:] == c):
    return True
  if not smooth:
    return False
  j = int(np.searchsorted(xs, c, side='right')) - 1
  if j == 0 or j + 1 == len(xs) - 1:
    return False
  return step == 0 or (xs[j + 1] - xs[j]) / step >= MIN_GRID_POINTS


def _binned(cuts: np.ndarray, cdf_a: Cdf,
            cdf_b: Cdf) -> Tuple[np.ndarray, np.ndarray]:
  a = np.diff(np.concatenate([[0.0], cdf_a.at(cuts), [1.0]])) * cdf_a.values
  b = np.diff(np.concatenate([[0.0], cdf_b.at(cuts), [1.0]])) * cdf_b.values
  return _pool(np.maximum(a, 0.0), np.maximum(b, 0.0), adjacent=True)


def binned_test(cdf_a: Cdf, cdf_b: Cdf, effect: float = 1.0) -> Optional[float]:
  """p-value of the chi-squared test on counts in quantile bins, or None.

  Bins are one side's quantile boundaries, where its counts are exact; the
  other side's counts there are read off its own histogram (exact at a
  shared boundary, linear between its boundaries where that is safe, see
  _readable). The test runs on each side's boundaries and keeps the smaller
  statistic: reading a histogram between its boundaries errs a little, and
  two readings agreeing on a difference is what makes it one.
  """
  step = _lattice_step(cdf_a.xs, cdf_b.xs)
  # Two samples of a continuous distribution never share a quantile; a
  # shared one is a value that many rows hold.
  shared = np.intersect1d(cdf_a.xs[1:-1], cdf_b.xs[1:-1])
  smooth = not (cdf_a.spiky or cdf_b.spiky or len(shared))
  results = []
  for own, other in ((cdf_a, cdf_b), (cdf_b, cdf_a)):
    cuts = np.unique(
        [c for c in own.xs[1:-1] if _readable(c, other, step, smooth)])
    if len(cuts):
      p = table_p_value(*_binned(cuts, cdf_a, cdf_b), effect)
      if p is not None:
        results.append(p)
  return max(results) if results else None


def kolmogorov_sf(d: float, n: float) -> float:
  """P(D >= d) for the two-sample Kolmogorov-Smirnov statistic, effective
  sample size n = n1 n2 / (n1 + n2), with Stephens' small-sample term."""
  if d <= 0 or n <= 0:
    return 1.0
  lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
  if lam < 0.2:
    return 1.0
  total = sum(
      (-1)**(k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
  return min(1.0, max(0.0, 2 * total))


def bounded_test(cdf_a: Cdf, cdf_b: Cdf, effect: float = 1.0) -> float:
  """p-value of a Kolmogorov-Smirnov test on what the histograms prove.

  At every boundary of either side, the gap between the two cumulative
  shares is at least what their bounds allow (see Cdf). That lower bound of
  the Kolmogorov-Smirnov distance needs no reading between boundaries, so
  it holds whatever the data: spikes, gaps, long tails. It cannot see a
  shift smaller than a bucket of smooth data, but it sees a spike move.
  """
  gap = 0.0
  for y in np.unique(np.concatenate([cdf_a.xs, cdf_b.xs])):
    lo_a, hi_a = cdf_a.bounds(y)
    lo_b, hi_b = cdf_b.bounds(y)
    gap = max(gap, lo_a - hi_b, lo_b - hi_a)
  gap = max(0.0, gap - SKETCH_SLACK)
  n = cdf_a.values * cdf_b.values / (cdf_a.values + cdf_b.values)
  return kolmogorov_sf(gap, n * effect)


def numeric_test(fa: FeatureStats, fb: FeatureStats) -> Optional[float]:
  """p-value for a change in a number's distribution, or None.

  Two tests on the quantile histograms, Bonferroni-combined: the binned
  chi-squared test for smooth shifts, and the bounded Kolmogorov-Smirnov
  test for a spike that moved.
  """
  cdf_a, cdf_b = quantile_cdf(fa), quantile_cdf(fb)
  if cdf_a is None or cdf_b is None:
    return None
  effect = _design_effect(fa, fb)
  p_bounded = bounded_test(cdf_a, cdf_b, effect)
  p_binned = binned_test(cdf_a, cdf_b, effect)
  if p_binned is None:
    return p_bounded
  return min(1.0, 2 * min(p_bounded, p_binned))


def bernoulli_distance(check: str, pa: float, pb: float) -> float:
  """How far two missing shares are apart, in the comparator's unit."""
  if check == JENSEN_SHANNON:

    def kl(p, m):
      return sum(x * math.log2(x / y) for x, y in zip(p, m) if x > 0)

    p, q = (pa, 1 - pa), (pb, 1 - pb)
    m = ((pa + pb) / 2, 1 - (pa + pb) / 2)
    return (kl(p, m) + kl(q, m)) / 2
  return abs(pa - pb)


def missing_test(missing_a: int, present_a: int, missing_b: int,
                 present_b: int) -> Tuple[str, Optional[float]]:
  """(test name, p-value) for a change in the share of missing values."""
  a = np.array([missing_a, present_a], float)
  b = np.array([missing_b, present_b], float)
  if (a + b).min() <= 0 or a.sum() <= 0 or b.sum() <= 0:
    return '', None  # nothing can differ: untestable
  share = (a + b) / (a.sum() + b.sum())
  if min((a.sum() * share).min(), (b.sum() * share).min()) >= MIN_EXPECTED:
    stat, dof = chi2_statistic(a, b)
    return 'chi-squared', chi2_sf([stat], [dof])[0]
  return 'Fisher exact', fisher_exact(missing_a, present_a, missing_b,
                                      present_b)


# ------------------------------------------------------------ the decisions


def _comparator_checks(schema: schema_pb2.Schema,
                       kind: str) -> Dict[str, Tuple[str, float]]:
  """{feature: (check, threshold)} for the drift or skew comparators."""
  out = {}
  for feature in schema.feature:
    field = 'drift_comparator' if kind == 'drift' else 'skew_comparator'
    if not feature.HasField(field):
      continue
    comparator = getattr(feature, field)
    if comparator.HasField('infinity_norm'):
      out[feature.name] = (L_INFINITY, comparator.infinity_norm.threshold)
    elif comparator.HasField('jensen_shannon_divergence'):
      out[feature.name] = (JENSEN_SHANNON,
                           comparator.jensen_shannon_divergence.threshold)
  return out


def _measured(anomalies: anomalies_pb2.Anomalies,
              kind: str) -> Dict[Tuple[str, str], Tuple[float, float]]:
  names = {
      anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY:
          L_INFINITY,
      anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE:
          JENSEN_SHANNON,
      anomalies_pb2.DriftSkewInfo.Measurement.NORMALIZED_ABSOLUTE_DIFFERENCE:
          'normalized absolute difference',
  }
  out = {}
  for info in anomalies.drift_skew_info:
    feature = '.'.join(info.path.step)
    items = (
        info.drift_measurements if kind == 'drift' else info.skew_measurements)
    for m in items:
      out[(feature, names.get(m.type, 'unknown'))] = (float(m.value),
                                                      float(m.threshold))
  return out


def compare(baseline: DatasetStats, compared: DatasetStats,
            schema: schema_pb2.Schema, anomalies: anomalies_pb2.Anomalies,
            kind: str, names: Tuple[str, str]) -> List[Decision]:
  """Tests every comparator TFDV measured, and every missing share.

  `anomalies` is TFDV's result of the comparison (its drift_skew_info holds
  the distances); `kind` is 'drift' or 'skew'; `names` the two datasets.
  The p-values are set, the verdicts are not: see decide().
  """
  fa, fb = feature_map(baseline), feature_map(compared)
  checks = _comparator_checks(schema, kind)
  measured = _measured(anomalies, kind)
  out: List[Decision] = []
  for (feature, check), (value, threshold) in sorted(measured.items()):
    a, b = fa.get(feature), fb.get(feature)
    if a is None or b is None:
      continue
    d = Decision(feature, check, names[0], names[1],
                 int(common(a).num_non_missing), int(common(b).num_non_missing),
                 value, threshold)
    if a.WhichOneof('stats') == 'num_stats':
      d.test, d.p_value = 'binned chi-squared + KS', numeric_test(a, b)
    else:
      d.test, d.p_value = 'chi-squared', categorical_test(a, b)
    out.append(d)
  for feature, (check, threshold) in sorted(checks.items()):
    a, b = fa.get(feature), fb.get(feature)
    if a is None or b is None:
      continue
    ca, cb = common(a), common(b)
    ma, pa = int(ca.num_missing), int(ca.num_non_missing)
    mb, pb = int(cb.num_missing), int(cb.num_non_missing)
    if ma + pa <= 0 or mb + pb <= 0 or ma + mb == 0:
      continue
    share_a, share_b = ma / (ma + pa), mb / (mb + pb)
    test, p = missing_test(ma, pa, mb, pb)
    out.append(
        Decision(
            feature,
            MISSING_SHARE + f' ({check})',
            names[0],
            names[1],
            ma + pa,
            mb + pb,
            bernoulli_distance(check, share_a, share_b),
            threshold,
            test,
            p,
            detail=f'missing in {share_a:.1%} of {names[0]} rows, '
            f'{share_b:.1%} of {names[1]} rows'))
  return out


def schema_rules(ds: DatasetStats, schema: schema_pb2.Schema,
                 name: str) -> List[Decision]:
  """presence.min_fraction and min_domain_mass of one dataset, tested.

  Rules that allow nothing (min_fraction 1, a domain without min_domain_mass)
  have no room for chance and are left to TFDV alone.
  """
  feats = feature_map(ds)
  domains = {d.name: set(d.value) for d in schema.string_domain}
  out: List[Decision] = []
  for feature in schema.feature:
    f = feats.get(feature.name)
    if f is None:
      continue
    c = common(f)
    rows = int(c.num_missing + c.num_non_missing)
    if feature.HasField('presence') and 0 < feature.presence.min_fraction < 1:
      allowed = 1.0 - feature.presence.min_fraction
      share = c.num_missing / rows if rows else 0.0
      out.append(
          Decision(
              feature.name,
              PRESENCE,
              '',
              name,
              0,
              rows,
              share,
              allowed,
              'binomial',
              binomial_sf(c.num_missing, rows, allowed),
              detail=f'missing in {int(c.num_missing):,} of {rows:,} {name} rows '
              f'({share:.1%}); the schema allows {allowed:.1%}'))
    mass = (
        feature.distribution_constraints.min_domain_mass
        if feature.HasField('distribution_constraints') else 1.0)
    if (f.WhichOneof('stats') == 'string_stats' and 0 < mass < 1 and
        c.num_non_missing):
      kind = feature.WhichOneof('domain_info')
      values = (
          domains.get(feature.domain) if kind == 'domain' else
          set(feature.string_domain.value) if kind == 'string_domain' else None)
      if values is None:
        continue
      counts, rest = value_counts(f)
      total = sum(counts.values()) + rest
      outside = rest + sum(n for v, n in counts.items() if v not in values)
      allowed = 1.0 - mass
      share = outside / total if total else 0.0
      out.append(
          Decision(
              feature.name,
              DOMAIN,
              '',
              name,
              0,
              int(total),
              share,
              allowed,
              'binomial',
              binomial_sf(outside * _design_effect(f, f),
                          total * _design_effect(f, f), allowed),
              detail=f'{int(outside):,} of {int(total):,} {name} values '
              f'({share:.1%}) outside the domain; the schema allows '
              f'{allowed:.1%}'))
  return out


def decide(decisions: Sequence[Decision],
           false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE) -> None:
  """Sets every verdict: Holm's step-down over all the tested findings.

  The i-th smallest of m p-values is significant when it and every smaller
  one is below rate / (m - i + 1); so the chance that any finding of a run is
  significant when nothing changed is at most the rate, whatever the number
  of features.
  """
  tested = sorted(((d.p_value, d) for d in decisions if d.p_value is not None),
                  key=lambda pd: pd[0])
  m = len(tested)
  still = True
  for i, (p_value, d) in enumerate(tested):
    d.level = false_alarm_rate / (m - i)
    still = still and p_value < d.level
    if still:
      d.verdict = ANOMALY if d.over_threshold else SMALL
    else:
      d.verdict = CHANCE if d.over_threshold else OK
  for d in decisions:
    if d.p_value is None:
      d.verdict = CHANCE if d.over_threshold else OK


# ------------------------------------------------------------------ a review

_COMPARATORS = (L_INFINITY, JENSEN_SHANNON)


@dataclasses.dataclass
class Review:
  """Every tested finding of one validation run, decided together."""
  decisions: List[Decision]
  false_alarm_rate: float

  @property
  def tests(self) -> int:
    return sum(1 for d in self.decisions if d.p_value is not None)

  def comparisons(self, compared: str) -> List[Decision]:
    """The distances TFDV measured for one compared dataset, decided."""
    return [
        d for d in self.decisions
        if d.compared == compared and d.check in _COMPARATORS
    ]

  def missing_shares(self, compared: str) -> List[Decision]:
    return [
        d for d in self.decisions
        if d.compared == compared and d.check.startswith(MISSING_SHARE)
    ]

  def rules(self) -> List[Decision]:
    """Schema rules one dataset broke by TFDV's fixed share, decided."""
    return [
        d for d in self.decisions
        if d.check in (PRESENCE, DOMAIN) and d.over_threshold
    ]

  def flagged_missing_shares(self) -> List[Decision]:
    return [
        d for d in self.decisions
        if d.check.startswith(MISSING_SHARE) and d.flagged
    ]

  def decision_for(self, feature: str, type_name: str,
                   compared: str) -> Optional[Decision]:
    """The decision on one of TFDV's anomaly reasons, if it has one.

    Comparator reasons (COMPARATOR_*_HIGH) are decided by the test of the
    distance, low presence by the presence test, unexpected string values
    by the domain test when the schema tolerates some (min_domain_mass).
    Every other reason is a rule without room for chance.
    """
    checks: Tuple[str, ...]
    if type_name.startswith('COMPARATOR_'):
      checks = _COMPARATORS
    elif type_name in _type_names(_PRESENCE_TYPES):
      checks = (PRESENCE,)
    elif type_name in _type_names(_DOMAIN_TYPES):
      checks = (DOMAIN,)
    else:
      return None
    return next((d for d in self.decisions if d.feature == feature and
                 d.compared == compared and d.check in checks), None)


def _type_names(types: frozenset) -> Tuple[str, ...]:
  return tuple(_AnomalyType.Name(t) for t in types)


def review(comparisons: Sequence[Tuple[DatasetStats, DatasetStats,
                                       anomalies_pb2.Anomalies, str,
                                       Tuple[str, str]]],
           datasets: Sequence[Tuple[DatasetStats, str]],
           schema: schema_pb2.Schema,
           false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE) -> Review:
  """Tests and decides a run: `comparisons` as compare() takes them
  (baseline, compared, TFDV's anomalies, 'drift' or 'skew', names), and the
  schema rules of each of `datasets` ((statistics, name))."""
  decisions = []
  for baseline, compared, anomalies, kind, names in comparisons:
    decisions.extend(
        compare(baseline, compared, schema, anomalies, kind, names))
  for ds, name in datasets:
    decisions.extend(schema_rules(ds, schema, name))
  decide(decisions, false_alarm_rate)
  return Review(decisions, false_alarm_rate)


# ------------------------------------------------------------------ wording


def p_text(d: Decision) -> str:
  if d.p_value is None:
    return 'untested'
  text = f'{d.p_value:.2g}' if d.p_value >= 1e-4 else f'{d.p_value:.0e}'
  return text.replace('e-0', 'e-')


def level_text(d: Decision) -> str:
  return '' if d.level is None else f'{d.level:.1g}'.replace('e-0', 'e-')


def why(d: Decision) -> str:
  """The decision in one sentence, for anomaly descriptions."""
  sizes = (f'{d.compared_rows:,} {d.compared} rows' if not d.baseline else
           f'{d.baseline_rows:,} {d.baseline} and {d.compared_rows:,} '
           f'{d.compared} rows')
  odds = (f'p = {p_text(d)}, significant below {level_text(d)}'
          if d.p_value is not None else 'not testable')
  return f'{sizes}: {odds} (false-alarm rate per run, Holm-corrected)'


def missing_description(d: Decision) -> str:
  unit = d.check[len(MISSING_SHARE):].strip(' ()')
  return (f'{d.detail}: {unit} {d.distance:.4f} over the threshold '
          f'{d.threshold:g}; {why(d)}')
