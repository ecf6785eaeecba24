"""Arrow string columns, as the job's coder and its row hashes both see them.

Categorical columns repeat a few strings over many rows. Dictionary-encoded,
they travel between stages in a fraction of the bytes (pipeline.cleanse's
record batch coder) and each distinct string is hashed once instead of once
per row (core.hashing). Both decide the same way when that is worth it.
"""

from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc


def is_byte_string(kind: pa.DataType) -> bool:
  """binary, large_binary, string or large_string."""
  return (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or
          pa.types.is_string(kind) or pa.types.is_large_string(kind))


def repeated_strings(values: pa.Array) -> Optional[pa.DictionaryArray]:
  """`values` dictionary-encoded if they are strings with at most half as
  many distinct values as values (nulls stay null); None otherwise."""
  if not is_byte_string(values.type):
    return None
  encoded = pc.dictionary_encode(values)
  return encoded if 2 * len(encoded.dictionary) <= len(values) else None
