"""gRPC requests (TF Serving's protos) -> checked raw feature rows.

TF Serving's gRPC clients send feature values in two forms:

  Predict, signature serving_raw   one TensorProto per raw feature, shape [N],
                                   in the signature's dtype (DT_INT64,
                                   DT_FLOAT or DT_STRING)
  Predict, serving_default         input 'examples': DT_STRING [N], each a
                                   serialized tf.Example
  Classify, Regress                a tensorflow.serving.Input: a list of
                                   tf.Examples, optionally with a context
                                   (features common to every example)

Both become the rows request_checks.py makes of a REST body, checked by the
same RowSchema with the same value parsers (core.values) and worded the same
way ("inputs (instance 2): feature 'age': ...", "examples[0]: unknown
feature ..."), so what REST refuses gRPC refuses, for the same reason.

Tensors are checked before anything is allocated for them: the dtype, a rank
of 1, the same N for every input, N within --max-instances, and the number
of values against the shape (TensorFlow's shorthand of fewer values, the
last one repeated, is accepted as TensorFlow accepts it). Values must be in
the field of the tensor's dtype (int64_val, float_val, string_val) or, for
numbers, in tensor_content; a value in any other field is an error rather
than a silent zero.

Values are read the way the Beam job reads tf.Examples (core.values' parsers
on native values): text must be UTF-8, a number finite and within its type,
a bool or timestamp in a spelling the training data may have. Missing
values: in a tf.Example, an absent feature or an empty value list (what
TensorFlow parses as missing); in a serving_raw tensor, NaN for a float and
'' for a string (as the signature documents); an int tensor has no missing
value, so rows with a missing int go as tf.Examples. A window column left
out is computed from the row, as for a REST instance without "history".

Each row is also kept as the request log records it: the values the client
sent, as JSON (text decoded, a missing value null).
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from google.protobuf import message as pb_message
import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import input_pb2

from core.layout import ExportDir
from serving.request_checks import RequestError
from serving.request_checks import Rows
from serving.request_checks import RowSchema

# The dtype of each raw feature kind in the serving_raw signature.
DTYPES = {
    'int': types_pb2.DT_INT64,
    'float': types_pb2.DT_FLOAT,
    'string': types_pb2.DT_STRING
}
# Where a tensor of a dtype keeps its values; the little-endian layout of
# its tensor_content (None: strings have none).
_VALUES: Dict[int, Tuple[str, Optional[np.dtype]]] = {
    types_pb2.DT_INT64: ('int64_val', np.dtype('<i8')),
    types_pb2.DT_FLOAT: ('float_val', np.dtype('<f4')),
    types_pb2.DT_STRING: ('string_val', None)
}
_VALUE_FIELDS = frozenset([
    f.name
    for f in tensor_pb2.TensorProto.DESCRIPTOR.fields
    if f.name.endswith('_val')
] + ['tensor_content'])


def dtype_name(dtype: int) -> str:
  try:
    return types_pb2.DataType.Name(dtype)
  except ValueError:
    return f'dtype {dtype}'


def _check_count(n: int, what: str, max_instances: int) -> None:
  """As request_checks does for REST: at least one, at most the limit."""
  if n == 0:
    raise RequestError(f'{what} is empty: send at least one instance')
  if n > max_instances:
    raise RequestError(f'{what} has {n} instances; the limit is '
                       f'{max_instances} per request (--max-instances)')


def _logged(value: Any) -> Any:
  """A value as the request log keeps it: JSON types, text decoded."""
  if isinstance(value, bytes):
    return value.decode('utf-8', errors='replace')
  if isinstance(value, list):
    return [_logged(v) for v in value]
  return value


# ------------------------------------------------------------------ tensors


def tensor_length(name: str, proto: tensor_pb2.TensorProto) -> int:
  """N of a [N] tensor; RequestError for any other shape."""
  shape = proto.tensor_shape
  dims = shape.dim  # each access of a nested field builds a wrapper: once
  if len(dims) != 1 or shape.unknown_rank:
    got = ('a tensor of unknown rank' if shape.unknown_rank else
           f'shape [{", ".join(str(d.size) for d in dims)}]')
    raise RequestError(f'input {name!r}: expected a 1-D tensor of shape [N], '
                       f'one value per instance, got {got}')
  n = dims[0].size
  if n < 0:
    raise RequestError(f'input {name!r}: shape [{n}] has a negative size')
  return n


def check_dtype(name: str, proto: tensor_pb2.TensorProto,
                expected: int) -> None:
  if proto.dtype != expected:
    raise RequestError(
        f'input {name!r}: expected a {dtype_name(expected)} tensor (the '
        f'signature\'s dtype), got {dtype_name(proto.dtype)}')


def tensor_values(name: str, proto: tensor_pb2.TensorProto,
                  n: int) -> List[Any]:
  """The n values of a checked [n] tensor as Python values (bytes for
  strings). Call after check_dtype and tensor_length.

  The values are read where TensorFlow reads them for the dtype; a tensor
  with none there is refused, naming the field its values are in, rather
  than read as zeros.
  """
  field, layout = _VALUES[proto.dtype]
  content = proto.tensor_content
  if content:
    if layout is None:
      raise RequestError(
          f'input {name!r}: a {dtype_name(proto.dtype)} tensor holds its '
          f'values in {field}, not tensor_content')
    size = n * layout.itemsize
    if len(content) != size:
      raise RequestError(
          f'input {name!r}: tensor_content has {len(content)} bytes; shape '
          f'[{n}] of {dtype_name(proto.dtype)} takes {size}')
    return np.frombuffer(content, layout).tolist()
  container = getattr(proto, field)
  if len(container) > n:
    raise RequestError(f'input {name!r}: {len(container)} values for shape '
                       f'[{n}]')
  values = container[:]  # a list; list(container) takes 5 times as long
  if not values:
    elsewhere = sorted({f.name for f, _ in proto.ListFields()} & _VALUE_FIELDS)
    where = f'{field} or tensor_content' if layout is not None else field
    raise RequestError(
        f'input {name!r}: no values for shape [{n}]; a '
        f'{dtype_name(proto.dtype)} tensor holds them in {where}' +
        (f', not {elsewhere[0]}' if elsewhere else ''))
  if len(values) < n:  # TensorFlow's shorthand: the last value repeats
    values.extend([values[-1]] * (n - len(values)))
  return values


def raw_tensor_rows(inputs: Mapping[str, tensor_pb2.TensorProto],
                    schema: RowSchema, max_instances: int) -> Rows:
  """Predict inputs for serving_raw: one [N] tensor per raw feature."""
  for key in inputs:
    if key not in schema.kinds:
      raise RequestError(f'inputs: {schema.unknown(key)}')
  for name in schema.names:
    if name not in inputs and name not in schema.derived:
      raise RequestError(
          f'inputs: missing input {name!r}; {ExportDir.RAW_SIGNATURE} takes '
          f'one tensor per raw feature ({", ".join(schema.names)})')
  names = [name for name in schema.names if name in inputs]
  tensors = {name: inputs[name] for name in names}  # one map lookup each
  n: Optional[int] = None
  for name in names:
    check_dtype(name, tensors[name], DTYPES[schema.kinds[name]])
    length = tensor_length(name, tensors[name])
    if n is None:
      n = length
      _check_count(n, f'input {name!r}', max_instances)
    elif length != n:
      raise RequestError(
          f'inputs: input {name!r} has {length} values but {names[0]!r} has '
          f'{n}; every input needs one value per instance')
  assert n is not None  # every non-window feature is an input
  columns = {}
  for name in names:
    values = tensor_values(name, tensors[name], n)
    if schema.kinds[name] == 'float':  # NaN: serving_raw's missing float
      values = [None if v != v else v for v in values]
    columns[name] = values
  rows, received = [], []
  for i in range(n):
    where = f'inputs (instance {i})'
    row = {
        name: schema.native_value(name, columns[name][i], where)
        for name in names
    }
    sent = {name: _logged(columns[name][i]) for name in names}
    if schema.windows:
      schema.fill_windows(row, None, where)
      sent = schema.logged(sent, row)
    rows.append(row)
    received.append(sent)
  return Rows(rows, received, ExportDir.RAW_SIGNATURE, columnar=True)


# --------------------------------------------------------------- tf.Example


def _features(example: example_pb2.Example, schema: RowSchema,
              where: str) -> Dict[str, Any]:
  """{feature: one value, a list (list columns) or None} of an Example."""
  out: Dict[str, Any] = {}
  for key, feature in example.features.feature.items():
    if key not in schema.kinds:
      raise RequestError(f'{where}: {schema.unknown(key)}')
    kind = feature.WhichOneof('kind')
    values = list(getattr(feature, kind).value) if kind else []
    if key in schema.lists:
      out[key] = values
    elif len(values) > 1:
      raise RequestError(f'{where}: feature {key!r}: expected at most one '
                         f'value, got a list of {len(values)}')
    else:
      out[key] = values[0] if values else None
  return out


def example_rows(examples: Sequence[example_pb2.Example],
                 schema: RowSchema,
                 context: Optional[example_pb2.Example] = None,
                 signature: Optional[str] = None) -> Rows:
  """Rows of tf.Examples (count already checked); a context's features
  count for every example, and a feature may not be in both."""
  common = (
      _features(context, schema, 'context') if context is not None else {})
  rows, received = [], []
  for i, example in enumerate(examples):
    where = f'examples[{i}]'
    values = _features(example, schema, where)
    both = [k for k in values if k in common]
    if both:
      raise RequestError(f'{where}: feature {both[0]!r} is also in the '
                         'context; a feature goes in one of the two')
    values.update(common)
    row, sent = {}, {}
    for name in schema.names:
      if name not in values and name in schema.derived:
        continue  # a window column left out: computed below
      value = values.get(name)
      row[name] = schema.native_value(name, value, where)
      sent[name] = _logged(value)
    if schema.windows:
      schema.fill_windows(row, None, where)
      sent = schema.logged(sent, row)
    rows.append(row)
    received.append(sent)
  return Rows(rows, received, signature)


def serialized_example_rows(inputs: Mapping[str, tensor_pb2.TensorProto],
                            schema: RowSchema, max_instances: int) -> Rows:
  """Predict inputs for serving_default: 'examples', serialized
  tf.Examples."""
  wanted = ExportDir.EXAMPLES_INPUT
  for key in inputs:
    if key != wanted:
      raise RequestError(
          f'inputs: {key[:60]!r} is not an input of signature '
          f'{ExportDir.DEFAULT_SIGNATURE}, which takes {wanted!r} '
          '(serialized tf.Examples); one tensor per raw feature goes to '
          f'signature_name {ExportDir.RAW_SIGNATURE!r}')
  if wanted not in inputs:
    raise RequestError(f'inputs: missing input {wanted!r} (serialized '
                       'tf.Examples)')
  proto = inputs[wanted]
  check_dtype(wanted, proto, types_pb2.DT_STRING)
  n = tensor_length(wanted, proto)
  _check_count(n, f'input {wanted!r}', max_instances)
  examples = []
  for i, data in enumerate(tensor_values(wanted, proto, n)):
    try:
      examples.append(example_pb2.Example.FromString(data))
    except pb_message.DecodeError as e:
      raise RequestError(f'examples[{i}]: not a serialized tf.Example '
                         f'({e})') from None
  return example_rows(examples, schema, signature=ExportDir.DEFAULT_SIGNATURE)


def input_rows(request_input: input_pb2.Input, schema: RowSchema,
               max_instances: int) -> Rows:
  """Classify / Regress input: example_list or example_list_with_context."""
  kind = request_input.WhichOneof('kind')
  context = None
  if kind == 'example_list':
    examples = request_input.example_list.examples
  elif kind == 'example_list_with_context':
    listed = request_input.example_list_with_context
    examples = listed.examples
    context = listed.context if listed.HasField('context') else None
  else:
    raise RequestError('input: expected example_list or '
                       'example_list_with_context, got neither')
  _check_count(len(examples), 'examples', max_instances)
  return example_rows(examples, schema, context)
