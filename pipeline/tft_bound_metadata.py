"""tf.Transform's transformed schema inferred from the graph that binds the
analyzers' results, not from a second import of the model it writes.

tf.Transform (1.16, `beam/impl.py`, TF1 graphs) makes the transform graph's
SavedModel in two steps once the analyzers have run: it imports the unbound
graph with each analyzer's output replaced by its value, and writes that as
the bound SavedModel (`_replace_tensors_with_constant_values`). Then, for
the transformed metadata, it imports that SavedModel once more, initializes
its tables and infers the schema from it (`_infer_metadata_from_saved_model`,
its "deferred metadata"). For Adult's graph of some 1,200 ops each import is
about 0.3 s of Python creating the graph's operations.

`install()` registers in place of the first step one that also infers the
schema, in the same way, from the graph it has just written (its tables
initialized after the write, so what is written is as before), and keeps it
for the bound SavedModel's directory; the second step takes it from there
instead of importing the model again. The inference is tf.Transform's own
(`schema_inference.infer_feature_schema` with the session). Where the two
steps run in different processes, or the first one's inference fails, the
second one imports the SavedModel as before.
"""

import threading
from typing import Dict

import tensorflow as tf
from tensorflow_transform import schema_inference
from tensorflow_transform.beam import common as beam_common
from tensorflow_transform.beam import impl
from tensorflow_transform.saved import saved_transform_io
from tensorflow_transform.tf_metadata import dataset_metadata

# tf.Transform's functions, which these replace: the inference is the
# fallback; the binding is kept to compare with (the tests).
_LIBRARY_BIND = impl._replace_tensors_with_constant_values  # pylint: disable=protected-access
_LIBRARY_INFER = impl._infer_metadata_from_saved_model  # pylint: disable=protected-access
_REPLACEMENT_MAP = impl._get_tensor_replacement_map  # pylint: disable=protected-access

# The bound SavedModel's directory -> the metadata inferred when it was
# written, until the deferred metadata takes it.
_INFERRED: Dict[str, dataset_metadata.DatasetMetadata] = {}
_LOCK = threading.Lock()


def _inferred_metadata(outputs, graph,
                       session) -> dataset_metadata.DatasetMetadata:
  """As `_infer_metadata_from_saved_model_v1` infers it, in a session whose
    variables are initialized."""
  session.run(tf.compat.v1.tables_initializer())
  return dataset_metadata.DatasetMetadata(
      schema=schema_inference.infer_feature_schema(outputs, graph, session))


def replace_tensors_with_constant_values(saved_model_dir, base_temp_dir,
                                         *tensor_bindings):
  """tf.Transform's `_replace_tensors_with_constant_values`, the schema of
    what it writes kept for the deferred metadata."""
  with tf.compat.v1.Graph().as_default() as graph:
    tensor_replacement_map = _REPLACEMENT_MAP(graph, *tensor_bindings)
    with tf.compat.v1.Session(graph=graph) as session:
      temp_dir = beam_common.get_unique_temp_path(base_temp_dir)
      input_tensors, output_tensors = (
          saved_transform_io.partially_apply_saved_transform_internal(
              saved_model_dir, {}, tensor_replacement_map))
      session.run(tf.compat.v1.global_variables_initializer())
      saved_transform_io.write_saved_transform_from_session(
          session, input_tensors, output_tensors, temp_dir)
      try:
        metadata = _inferred_metadata(output_tensors, graph, session)
      except Exception:  # noqa: BLE001 - inferred again from the SavedModel
        return temp_dir
  with _LOCK:
    _INFERRED[temp_dir] = metadata
  return temp_dir


def infer_metadata_from_saved_model(
    saved_model_dir: str,
    use_tf_compat_v1: bool) -> dataset_metadata.DatasetMetadata:
  """tf.Transform's `_infer_metadata_from_saved_model`: what was inferred
    when the SavedModel was written, if this process wrote it."""
  with _LOCK:
    metadata = _INFERRED.pop(saved_model_dir, None)
  if metadata is not None and use_tf_compat_v1:
    return metadata
  return _LIBRARY_INFER(saved_model_dir, use_tf_compat_v1)


def install() -> None:
  """Idempotent. Before the pipeline is built: tf.Transform's transforms
    take these functions when they are applied."""
  # pylint: disable=protected-access
  impl._replace_tensors_with_constant_values = (
      replace_tensors_with_constant_values)
  impl._infer_metadata_from_saved_model = infer_metadata_from_saved_model
