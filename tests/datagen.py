"""Small generated datasets for tests: deterministic, with known properties."""

import random
from typing import List, Optional

TOY_HEADER = 'height,visits,city,color,note,outcome'
TOY_CITIES = ['paris', 'oslo', 'lima', 'kyiv', 'rome']


def toy_rows(n: int, seed: int = 0, positive_rate: float = 0.25,
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
    fields = [str(height), str(visits), city, color, f'row {i}',
              'yes' if positive else 'no']
    for j in range(4):
      if rng.random() < missing_rate:
        fields[j] = rng.choice(['?', '', 'NA'])
    rows.append(', '.join(fields))
  return rows


def write_lines(path: str, lines: List[str], header: Optional[str] = None,
                trailing_blank: bool = True) -> str:
  with open(path, 'w', encoding='utf-8') as f:
    if header is not None:
      f.write(header + '\n')
    for line in lines:
      f.write(line + '\n')
    if trailing_blank:
      f.write('\n')
  return path
