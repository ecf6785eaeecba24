"""Small generated datasets for tests: deterministic, with known properties."""

import datetime
import math
import os
import random
from typing import List, Optional

import yaml

# The toy dataset's config; its rows come from toy_rows().
TOY_CONFIG = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'data', 'toy.yaml')
TOY_HEADER = 'height,visits,city,color,note,outcome'
TOY_CITIES = ['paris', 'oslo', 'lima', 'kyiv', 'rome']


def toy_rows(n: int,
             seed: int = 0,
             positive_rate: float = 0.25,
             missing_rate: float = 0.05) -> List[str]:
  """CSV lines (no header) for tests/data/toy.yaml; the label depends on
  height and city so that a model can learn it."""
  rng = random.Random(seed)
  rows = []
  for i in range(n):
    height = round(rng.gauss(170, 10), 2)
    visits = int(rng.expovariate(1 / 20))
    city = rng.choice(TOY_CITIES)
    color = rng.choice(['red', 'green', 'blue'])
    score = (height - 170) / 10 + (1.0 if city in ('oslo', 'rome') else -0.5)
    positive = rng.random() < positive_rate * (2.5 if score > 0.5 else 0.6)
    fields = [
        str(height),
        str(visits), city, color, f'row {i}', 'yes' if positive else 'no'
    ]
    for j in range(4):
      if rng.random() < missing_rate:
        fields[j] = rng.choice(['?', '', 'NA'])
    rows.append(', '.join(fields))
  return rows


def write_lines(path: str,
                lines: List[str],
                header: Optional[str] = None,
                trailing_blank: bool = True) -> str:
  with open(path, 'w', encoding='utf-8') as f:
    if header is not None:
      f.write(header + '\n')
    for line in lines:
      f.write(line + '\n')
    if trailing_blank:
      f.write('\n')
  return path


MIXED_HEADER = 'amount,visits,member,signup,shop,tags,review,target'
_WORDS = [
    'great', 'slow', 'friendly', 'cheap', 'broken', 'fast', 'late', 'perfect',
    'rude', 'clean'
]
_TAGS = ['sale', 'new', 'gift', 'bulk', 'promo']


def mixed_rows(n: int,
               seed: int = 0,
               task: str = 'binary',
               missing_rate: float = 0.05,
               iso_timestamps_only: bool = False) -> List[str]:
  """CSV lines (no header) for tests/data/mixed.yaml: one column of every
  type, each sometimes missing; the target depends on several of them.

  task: 'binary' (low/high), 'multiclass' (low/mid/high) or 'regression'
  (a positive number). Timestamps are ISO-8601 or epoch seconds at random,
  or all ISO-8601 with iso_timestamps_only.
  """
  rng = random.Random(seed)
  rows = []
  for _ in range(n):
    amount = round(rng.lognormvariate(3, 1), 2)
    visits = rng.randint(0, 40)
    member = rng.random() < 0.4
    signup = 1_700_000_000 + rng.randint(0, 3 * 365 * 86400)
    shop = f'shop{rng.randint(0, 300)}'
    tags = rng.sample(_TAGS, rng.randint(0, 3))
    words = rng.sample(_WORDS, rng.randint(2, 6))
    score = (0.8 * member + 0.02 * visits + 0.5 * ('great' in words) - 0.5 *
             ('rude' in words) + 0.3 * ('sale' in tags) +
             0.2 * math.log(amount) + rng.gauss(0, 0.3))
    if task == 'regression':
      target = f'{math.exp(score):.4f}'
    elif task == 'multiclass':
      target = 'low' if score < 1.0 else ('mid' if score < 1.6 else 'high')
    else:
      target = 'high' if score > 1.3 else 'low'
    stamp = datetime.datetime.fromtimestamp(signup, datetime.timezone.utc)
    fields = [
        str(amount),
        str(visits),
        rng.choice(['true', 'yes', '1'])
        if member else rng.choice(['false', 'no', '0']),
        stamp.strftime('%Y-%m-%dT%H:%M:%SZ') if iso_timestamps_only or
        rng.random() < 0.5 else str(signup), shop, '|'.join(tags),
        '"' + ' '.join(words).capitalize() + ', the service!"', target
    ]
    for j in range(7):
      if rng.random() < missing_rate:
        fields[j] = rng.choice(['?', '', 'NA'])
    rows.append(','.join(fields))
  return rows


TRIP_HEADER = ('trip_id,pickup_area,distance,passengers,payment,notes,vendor,'
               'tip,tipped')
# Community-area-like codes: 20 integers scattered over 1..999.
TRIP_AREAS = [
    3, 8, 24, 32, 41, 76, 77, 105, 118, 230, 256, 317, 422, 508, 590, 611, 707,
    812, 903, 950
]


def trip_rows(n: int, seed: int = 0, missing_rate: float = 0.03) -> List[str]:
  """CSV lines (no header) of a trip table with one column of each kind a
  drafted config must handle: a per-row id (trip_id), an integer code with
  20 values (pickup_area), a skewed genuine number (distance), a small
  genuine count (passengers), a genuine category (payment), a column empty
  in every row (notes), a constant one (vendor), and one computed from the
  label with noise (tip: only known once the label is). The label, tipped,
  depends on payment, distance and the area."""
  rng = random.Random(seed)
  area_effect = {a: rng.gauss(0, 0.6) for a in TRIP_AREAS}
  weights = [1 + (i % 5) for i in range(len(TRIP_AREAS))]
  rows = []
  for i in range(n):
    area = rng.choices(TRIP_AREAS, weights)[0]
    distance = round(rng.lognormvariate(1.0, 0.8), 2)
    passengers = rng.choice([1, 1, 1, 2, 2, 3, 4, 5, 6])
    payment = rng.choice(['card', 'card', 'cash', 'app'])
    score = (1.2 * (payment == 'card') + 0.5 * math.log(distance) +
             area_effect[area] + rng.gauss(0, 0.8))
    tipped = score > 1.5
    tip = round(max(0.0, rng.gauss(3.5 if tipped else 0.0, 0.8)), 2)
    fields = [
        str(50_000 + i),
        str(area),
        str(distance),
        str(passengers), payment, '', 'acme',
        str(tip), 'yes' if tipped else 'no'
    ]
    for j in (1, 2, 4):
      if rng.random() < missing_rate:
        fields[j] = ''
    rows.append(','.join(fields))
  return rows


def trip_config_with_every_column(draft_text: str) -> str:
  """A drafted trips config (YAML) curated back to every column a feature,
  the area scaled as a number, and no TFDV schema: the pitfalls that
  `schema init` leaves out, added back by hand."""
  doc = yaml.safe_load(draft_text)
  doc.pop('tfdv_schema', None)
  for column in doc['columns']:
    if column['name'] == 'pickup_area':
      column['type'] = 'int'
  doc['features'] = {
      'trip_id': {},
      'pickup_area': {
          'buckets': 10
      },
      'distance': {},
      'passengers': {},
      'payment': {},
      'notes': {},
      'vendor': {},
      'tip': {}
  }
  return yaml.safe_dump(doc, sort_keys=False)


MIXED_CONFIG = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'data', 'mixed.yaml')
# The label section of tests/data/mixed.yaml for each label task.
MIXED_LABELS = {
    'binary': {
        'column': 'target',
        'task': 'binary',
        'classes': ['low', 'high'],
        'positive': 'high'
    },
    'multiclass': {
        'column': 'target',
        'task': 'multiclass',
        'classes': ['low', 'mid', 'high']
    },
    'regression': {
        'column': 'target',
        'task': 'regression',
        'log_target': True
    },
}


def mixed_config(task: str) -> dict:
  """tests/data/mixed.yaml as a mapping, its label made `task` (a float
  target, split without stratification, for regression)."""
  with open(MIXED_CONFIG, encoding='utf-8') as f:
    raw = yaml.safe_load(f)
  raw['label'] = MIXED_LABELS[task]
  if task == 'regression':
    raw['columns'][-1]['type'] = 'float'
    del raw['split']['stratify']
  return raw
