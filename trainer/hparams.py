"""Model hyperparameters: built-in defaults, then the config, then flags.

The dataset config's free-form `model:` section holds the hyperparameters
that suit that dataset (so `make run` needs no flags), and every key has a
command-line flag of the same name (`hidden_units` <-> `--hidden-units`) that
overrides it for one run. Unknown keys in `model:` are an error naming the
allowed keys, so a typo cannot silently fall back to a default.
"""

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Tuple

from core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class HParams:
  """Everything that shapes one training run."""
  epochs: int = 60
  batch_size: int = 256
  steps_per_epoch: Optional[int] = None  # None: one full pass per epoch
  hidden_units: Tuple[int, ...] = (100, 50)
  dropout: float = 0.3
  # Deep-part embedding size for a categorical feature with n ids, unless the
  # config sets embedding_dim: round(embedding_scale * n ** 0.25), at least 2.
  embedding_scale: float = 6.0
  embedding_max_dim: int = 32
  # Also embed the wide-only categorical features in the deep part: numeric
  # buckets let the MLP learn step-shaped effects, crosses their interactions.
  deep_buckets: bool = False
  deep_crosses: bool = False
  # Which parts to build: 'wide_deep', 'wide' (the linear model over the
  # wide features alone) or 'deep' (the MLP alone); for ablations.
  model_type: str = 'wide_deep'
  wide_optimizer: str = 'ftrl'
  wide_learning_rate: float = 0.05
  wide_l1: float = 0.01
  wide_l2: float = 0.01
  deep_optimizer: str = 'adam'
  deep_learning_rate: float = 0.001
  # L2 penalty on the deep part's kernels and embeddings (0: none).
  deep_l2: float = 0.0
  # Deep learning rate schedule: 'constant', 'cosine' (decays to
  # lr_min_fraction of the rate over `epochs`) or 'plateau' (multiplies the
  # rate by lr_decay_factor after lr_patience epochs without a better eval
  # AUC).
  lr_schedule: str = 'constant'
  lr_min_fraction: float = 0.05
  lr_decay_factor: float = 0.5
  lr_patience: int = 2
  early_stopping_patience: int = 5
  shuffle_buffer: int = 10000
  cache: bool = True
  # Class imbalance, train split only (eval and test are never touched):
  # class_weight 'none', 'balanced' (n / (2 * n_class) per class, from the
  # train split's label counts) or a number, the weight of the positive class
  # (the negative class weighs 1). oversample: the share of minority-class
  # examples in the training stream (e.g. 0.5 for balanced batches), drawn by
  # sampling the two classes' streams; 0 turns it off.
  class_weight: str = 'none'
  oversample: float = 0.0
  # The decision threshold behind `classes`: 'max_f1' picks the eval
  # probability that maximises F1; 'precision' / 'recall' the threshold that
  # reaches threshold_target precision (with the most recall) / recall (with
  # the most precision) on eval; 'fixed' uses `threshold` as given.
  threshold_objective: str = 'max_f1'
  threshold_target: float = 0.8
  threshold: float = 0.5
  # Raw columns whose values slice the report's metrics (numeric ones are cut
  # into slice_buckets quantile buckets of the eval split).
  slices: Tuple[str, ...] = ()
  slice_buckets: int = 4
  seed: int = 42

  def to_json(self) -> Dict[str, Any]:
    d = dataclasses.asdict(self)
    d['hidden_units'] = list(self.hidden_units)
    d['slices'] = list(self.slices)
    return d


OPTIMIZERS = ('ftrl', 'adam', 'adagrad', 'sgd', 'rmsprop')
MODEL_TYPES = ('wide_deep', 'wide', 'deep')
LR_SCHEDULES = ('constant', 'cosine', 'plateau')
THRESHOLD_OBJECTIVES = ('max_f1', 'precision', 'recall', 'fixed')
_CHOICES = {
    'model_type': MODEL_TYPES,
    'lr_schedule': LR_SCHEDULES,
    'threshold_objective': THRESHOLD_OBJECTIVES,
}

_FIELDS = {f.name: f for f in dataclasses.fields(HParams)}


def _coerce(name: str, value: Any, where: str) -> Any:
  """Converts `value` to the type of field `name`, or raises ConfigError."""
  default = _FIELDS[name].default
  try:
    if name == 'hidden_units':
      if isinstance(value, str):
        value = [v for v in value.replace(' ', '').split(',') if v]
      units = tuple(int(v) for v in value)
      if any(u < 1 for u in units):
        raise ValueError
      return units
    if name == 'slices':
      if isinstance(value, str):
        value = [v for v in value.replace(' ', '').split(',') if v]
      if not all(isinstance(v, str) and v for v in value):
        raise ValueError
      return tuple(value)
    if name == 'class_weight':
      value = str(value).strip().lower()
      if value not in ('none', 'balanced') and not 0 < float(value) < math.inf:
        raise ValueError
      return value
    if name in _CHOICES:
      value = str(value).lower()
      if value not in _CHOICES[name]:
        raise ValueError
      return value
    if name == 'steps_per_epoch':
      if value is None:
        return None
      value = int(value)
      if value < 1:
        raise ValueError
      return value
    if isinstance(default, bool):
      if isinstance(value, str):
        if value.lower() not in ('true', 'false', '1', '0', 'yes', 'no'):
          raise ValueError
        return value.lower() in ('true', '1', 'yes')
      if not isinstance(value, bool):
        raise ValueError
      return value
    if isinstance(default, int):
      if isinstance(value, bool) or float(value) != int(float(value)):
        raise ValueError
      return int(float(value))
    if isinstance(default, float):
      if isinstance(value, bool):
        raise ValueError
      return float(value)
    if name.endswith('_optimizer'):
      value = str(value).lower()
      if value not in OPTIMIZERS:
        raise ValueError
      return value
    return value
  except (TypeError, ValueError):
    allowed = ''
    if name in _CHOICES:
      allowed = f'; choose one of {", ".join(_CHOICES[name])}'
    elif name == 'class_weight':
      allowed = '; none, balanced or a positive number'
    raise ConfigError(f'{where}: {value!r} is not a valid value for {name} '
                      f'(default {_describe(default)}{allowed})') from None


def _describe(default: Any) -> str:
  if isinstance(default, tuple):
    return ','.join(str(v) for v in default)
  return repr(default)


def _validate(hp: HParams) -> HParams:
  checks = [
      (hp.epochs >= 1, 'epochs must be >= 1'),
      (hp.batch_size >= 1, 'batch_size must be >= 1'),
      (0.0 <= hp.dropout < 1.0, 'dropout must be in [0, 1)'),
      (hp.embedding_scale > 0, 'embedding_scale must be > 0'),
      (hp.embedding_max_dim >= 1, 'embedding_max_dim must be >= 1'),
      (hp.wide_learning_rate > 0, 'wide_learning_rate must be > 0'),
      (hp.deep_learning_rate > 0, 'deep_learning_rate must be > 0'),
      (hp.wide_l1 >= 0 and hp.wide_l2 >= 0, 'wide_l1/wide_l2 must be >= 0'),
      (hp.early_stopping_patience >= 0, 'early_stopping_patience must be >= 0'),
      (hp.shuffle_buffer >= 1, 'shuffle_buffer must be >= 1'),
      (0.0 < hp.threshold < 1.0, 'threshold must be in (0, 1)'),
      (0.0 < hp.threshold_target <= 1.0, 'threshold_target must be in (0, 1]'),
      (0.0 <= hp.oversample < 1.0, 'oversample must be in [0, 1)'),
      (hp.deep_l2 >= 0, 'deep_l2 must be >= 0'),
      (0.0 < hp.lr_min_fraction <= 1.0, 'lr_min_fraction must be in (0, 1]'),
      (0.0 < hp.lr_decay_factor < 1.0, 'lr_decay_factor must be in (0, 1)'),
      (hp.lr_patience >= 1, 'lr_patience must be >= 1'),
      (hp.slice_buckets >= 2, 'slice_buckets must be >= 2'),
  ]
  for ok, message in checks:
    if not ok:
      raise ConfigError(f'hyperparameters: {message}')
  return hp


def resolve(config_model: Mapping[str, Any],
            overrides: Mapping[str, Any]) -> HParams:
  """Defaults <- config `model:` section <- flags (None means not given)."""
  values = {}
  for key, value in (config_model or {}).items():
    if key not in _FIELDS:
      raise ConfigError(f'model.{key}: unknown hyperparameter; allowed keys: '
                        f'{", ".join(sorted(_FIELDS))}')
    values[key] = _coerce(key, value, f'model.{key}')
  for key, value in overrides.items():
    if value is None:
      continue
    if key not in _FIELDS:
      raise KeyError(key)
    values[key] = _coerce(key, value, '--' + key.replace('_', '-'))
  return _validate(HParams(**values))


def flag_names() -> Dict[str, dataclasses.Field]:
  """Hyperparameter name -> dataclass field, for building argparse flags."""
  return dict(_FIELDS)
