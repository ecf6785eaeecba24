"""Model hyperparameters: built-in defaults, then the config, then flags.

The dataset config's free-form `model:` section holds the hyperparameters
that suit that dataset (so `make run` needs no flags), and every key has a
command-line flag of the same name (`hidden_units` <-> `--hidden-units`) that
overrides it for one run. Unknown keys in `model:` are an error naming the
allowed keys, so a typo cannot silently fall back to a default.
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

from pipeline.errors import ConfigError


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
  wide_optimizer: str = 'ftrl'
  wide_learning_rate: float = 0.05
  wide_l1: float = 0.01
  wide_l2: float = 0.01
  deep_optimizer: str = 'adam'
  deep_learning_rate: float = 0.001
  early_stopping_patience: int = 5
  shuffle_buffer: int = 10000
  cache: bool = True
  threshold: float = 0.5
  seed: int = 42

  def to_json(self) -> Dict[str, Any]:
    d = dataclasses.asdict(self)
    d['hidden_units'] = list(self.hidden_units)
    return d


OPTIMIZERS = ('ftrl', 'adam', 'adagrad', 'sgd', 'rmsprop')

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
    raise ConfigError(f'{where}: {value!r} is not a valid value for {name} '
                      f'(default {_describe(default)})') from None


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
      raise ConfigError(
          f'model.{key}: unknown hyperparameter; allowed keys: '
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
