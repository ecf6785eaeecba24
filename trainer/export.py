"""Export: a self-contained SavedModel whose signatures carry the transform.

The SavedModel under MDIR/export/<version>/ (TF Serving layout: an integer
version directory) holds the trained model *and* the tf.Transform graph, so a
client sends raw feature values and gets a prediction; nobody outside has to
reimplement trimming, missing-value handling, scaling, bucketing, vocabulary
lookup or crosses, which is what keeps training and serving from drifting
apart. The transform graph's tables and assets are tracked by the exported
module, so its vocabulary files are copied into the export and the preprocess
directory is not needed any more.

Signatures:
  serving_default  examples: [N] string, serialized tf.Example of raw features
                   (no label); a missing feature is simply absent.
  serving_raw      one [N] tensor per raw feature, named like the raw column,
                   in its raw dtype (int64, float32 or string); NaN marks a
                   missing float, '' or '?' (any configured missing token) a
                   missing string.
Both return the outputs of the label's head (trainer/heads/):
  binary      probabilities: [N, 1] float32, P(positive class)
              classes:       [N] string, the label's own class names
  multiclass  probabilities: [N, K] float32, in label.classes order
              classes:       [N] string, the most probable class
  regression  predictions:   [N, 1] float32, in the label's units

A list column (several strings per row) can only be sent through
serving_default: serving_raw takes one value per row and feature.

A binary model's decision threshold is a variable of the export (and is
recorded in assets.extra/metadata.json), so a tuned threshold can be exported
later without retraining. assets.extra/config.yaml is the dataset config, which
`trainer.predict` uses to read raw files in the dataset's own dialect.
"""

import contextlib
import datetime
import json
import os
import time
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
from tensorflow.python.trackable import base as trackable_base
import tensorflow_transform as tft

# tf_keras has no public switch for this (model.save's save_traces sets it).
from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope

from core import cli
from core import features as raw_features
from core.config import DatasetConfig
from core.layout import ExportDir
from core.layout import join
from core.layout import ModelDir
from trainer import evaluate
from trainer import heads
from trainer.model import OPTIMIZER_ATTRIBUTES

# The export's names are core.layout.ExportDir's (serving reads them there).
DEFAULT_SIGNATURE = ExportDir.DEFAULT_SIGNATURE
RAW_SIGNATURE = ExportDir.RAW_SIGNATURE
EXAMPLES_INPUT = ExportDir.EXAMPLES_INPUT


def _dense_to_sparse(x: tf.Tensor) -> tf.SparseTensor:
  """[N] -> SparseTensor [N, 1] with every value present.

  Unlike tf.sparse.from_dense this keeps zeros and empty strings: a 0 is a
  real value, and whether '' means missing is the transform graph's decision,
  exactly as for a parsed tf.Example.
  """
  x = tf.reshape(x, [-1])
  n = tf.shape(x, out_type=tf.int64)[0]
  indices = tf.stack([tf.range(n), tf.zeros([n], tf.int64)], axis=1)
  return tf.SparseTensor(indices, x, tf.stack([n, tf.constant(1, tf.int64)]))


class _LoadedTransform(trackable_base.Trackable):
  """tf.Transform's loaded transform graph, as the export saves it: its
  tables' initializer and vocabulary files, not its own signature.

  tf.Transform's layer tracks every attribute of its loader, so that the
  tables and files come along; among them is the loaded transform_fn's
  signature (594 of the Adult export's 1,876 graph nodes), which no serving
  function calls and every load of the export imported. The functions below
  call the layer, which calls the function it prunes from that signature;
  the pruned function is saved as theirs.
  """

  def __init__(self, tft_layer):
    super().__init__()
    # Not an attribute Trackable's own tracking sees; its children are ours.
    self._loaded = tft_layer._saved_model_loader._imported  # pylint: disable=protected-access

  def _trackable_children(self,
                          save_type=trackable_base.SaveType.CHECKPOINT,
                          **kwargs):
    children = dict(self._loaded._trackable_children(save_type, **kwargs))  # pylint: disable=protected-access
    children.pop('signatures', None)
    return children


class ServingModule(tf.Module):
  """What gets saved: model + transform graph + threshold + signatures."""

  def __init__(self,
               model,
               tft_layer,
               config: DatasetConfig,
               feature_names: Sequence[str],
               threshold: float,
               head: Optional[heads.Head] = None,
               scoring: Optional[evaluate.ScoringSteps] = None):
    super().__init__(name='wide_deep_serving')
    self.model = model
    self._scoring = scoring or evaluate.ScoringSteps(model)
    self.tft_layer = tft_layer
    # Called, not saved: what the transform graph needs is saved below.
    self._delete_tracking('tft_layer')
    self.transform_graph = _LoadedTransform(tft_layer)
    self.threshold = tf.Variable(
        threshold, dtype=tf.float32, trainable=False, name='threshold')
    self._feature_names = list(feature_names)
    self._raw_spec = raw_features.raw_feature_spec(config, include_label=False)
    self._head = head or heads.make_head(config)
    raw_inputs = {
        name: tf.TensorSpec([None], spec.dtype, name=name)
        for name, spec in self._raw_spec.items()
    }
    examples = [tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)]
    # Without AutoGraph: these functions have no Python control flow on
    # tensors, and converting them would rewrite tf_keras and tf.Transform's
    # layer from source on every export (seconds, for nothing).
    # The transform and the model are traced once each, for the raw features
    # as parsed (SparseTensors), and called by the functions below: each
    # trace of tf.Transform's layer prunes its TF1 graph anew (about 0.5 s),
    # and each trace of the model's call took 0.3-0.6 s. The model's call is
    # the step `scoring` already traced for the transformed features, when
    # the splits were scored with it.
    sparse = [{
        name: tf.SparseTensorSpec([None, None], spec.dtype)
        for name, spec in self._raw_spec.items()
    }]
    self._transform_sparse = tf.function(
        self._apply_transform, input_signature=sparse, autograph=False)
    self._predict_sparse = tf.function(
        self._apply_model, input_signature=sparse, autograph=False)
    self.serve_examples = tf.function(
        self._serve_examples, input_signature=examples, autograph=False)
    self.serve_raw = tf.function(
        self._serve_raw, input_signature=[raw_inputs], autograph=False)
    # Not a signature: lets tests (and debugging) see the exact transformed
    # features the exported graph computes from raw tf.Examples.
    self.transform_examples = tf.function(
        self._transform_examples, input_signature=examples, autograph=False)

  def _apply_transform(
      self, raw: Mapping[str, tf.SparseTensor]) -> Dict[str, tf.Tensor]:
    transformed = self.tft_layer(dict(raw))
    return {name: transformed[name] for name in self._feature_names}

  def _transform(self, raw: Mapping[str,
                                    tf.SparseTensor]) -> Dict[str, tf.Tensor]:
    return self._transform_sparse(dict(raw))

  def _apply_model(self, raw: Mapping[str,
                                      tf.SparseTensor]) -> Dict[str, tf.Tensor]:
    transformed = self._transform(raw)
    # Dense and sparse (a bag of ids) features alike, as the datasets'
    # element specs give them.
    spec = {
        name: tf.type_spec_from_value(tensor)
        for name, tensor in transformed.items()
    }
    outputs = self._scoring.for_spec(spec)(transformed)
    return self._head.serving_outputs(outputs, self.threshold)

  def _predict(self, raw: Mapping[str,
                                  tf.SparseTensor]) -> Dict[str, tf.Tensor]:
    return self._predict_sparse(dict(raw))

  def _parse(self, examples: tf.Tensor) -> Dict[str, tf.SparseTensor]:
    return tf.io.parse_example(examples, self._raw_spec)

  def _serve_examples(self, examples):
    return self._predict(self._parse(examples))

  def _serve_raw(self, inputs):
    return self._predict({k: _dense_to_sparse(v) for k, v in inputs.items()})

  def _transform_examples(self, examples):
    return self._transform(self._parse(examples))


@contextlib.contextmanager
def _without_optimizers(model) -> Iterator[None]:
  """The model untracked from its optimizers while the export is saved.

  Serving never trains, yet a tracked optimizer's slots and step counters go
  into the SavedModel: 70 of the Adult export's 105 variables, and 0.8 of
  its 1.9 MB. This is what tf_keras' model.save(include_optimizer=False)
  does; the optimizers are put back afterwards.
  """
  detached = {}
  for attribute in OPTIMIZER_ATTRIBUTES:
    optimizer = getattr(model, attribute, None)
    if optimizer is not None:
      detached[attribute] = optimizer
      setattr(model, attribute, None)
      model._delete_tracking(attribute)  # pylint: disable=protected-access
  try:
    yield
  finally:
    for attribute, optimizer in detached.items():
      setattr(model, attribute, optimizer)


def _new_version_dir(export_root: str) -> Tuple[int, str]:
  """An integer version (seconds since the epoch) not already taken."""
  version = int(time.time())
  while tf.io.gfile.exists(join(export_root, str(version))):
    version += 1
  return version, join(export_root, str(version))


def export_model(model,
                 tft_output: tft.TFTransformOutput,
                 config: DatasetConfig,
                 feature_names: Sequence[str],
                 model_dir: str,
                 threshold: float,
                 extra_metadata: Optional[Mapping[str, Any]] = None,
                 write: bool = True,
                 head: Optional[heads.Head] = None,
                 scoring: Optional[evaluate.ScoringSteps] = None) -> str:
  """Saves the serving SavedModel; returns its version directory.

  Written under a temporary name and renamed into place, so TF Serving (which
  watches for integer directories) never loads a half-written model. With
  write=False (non-chief workers of a multi-worker job, which must take part
  in saving) it saves to a temporary directory and deletes it. `scoring`:
  the model's traced calls, when it has already scored with them.
  """
  export_root = ModelDir(model_dir).export_base
  tf.io.gfile.makedirs(export_root)
  version, final = _new_version_dir(export_root)
  staging = join(export_root, f'.staging-{version}-{os.getpid()}')
  # A stop or an error half-way leaves no staging directory behind.
  try:
    head = head or heads.make_head(config)
    module = ServingModule(model, tft_output.transform_features_layer(), config,
                           feature_names, threshold, head, scoring)
    # The functions themselves, traced by tf.saved_model.save: a concrete
    # function traced here, before the save, was traced once more inside it
    # (0.3-0.6 s of every export).
    signatures = {
        DEFAULT_SIGNATURE: module.serve_examples,
        RAW_SIGNATURE: module.serve_raw,
    }
    # Keras objects are saved without their layers' call traces: serving uses
    # the signatures only, and saving the traces (every layer's call functions,
    # plus a default signature of the first Keras object met) and restoring
    # them at every load took seconds.
    with keras_option_scope(save_traces=False, in_tf_saved_model_scope=False), \
        _without_optimizers(model):
      tf.saved_model.save(module, staging, signatures=signatures)
    if not write:
      tf.io.gfile.rmtree(staging)
      return final
    written = ExportDir(staging)
    tf.io.gfile.makedirs(written.extra_dir)
    with tf.io.gfile.GFile(written.config_path, 'w') as f:
      f.write(config.source_text)
    metadata = {
        'version':
            version,
        'created':
            datetime.datetime.now(datetime.timezone.utc
                                 ).isoformat(timespec='seconds'),
        'dataset':
            config.name,
        'config_sha256':
            config.config_hash,
        'threshold':
            head.export_threshold(threshold),
        'label': {
            'column': config.label.column,
            'task': config.label.task,
            'classes': list(config.label.classes),
            'positive': config.label.positive,
            'log_target': config.label.log_target,
        },
        'signatures': {
            DEFAULT_SIGNATURE: {
                'inputs': {
                    EXAMPLES_INPUT: 'string'
                }
            },
            RAW_SIGNATURE: {
                'inputs': {
                    name: spec.dtype.name
                    for name, spec in raw_features.raw_feature_spec(
                        config, include_label=False).items()
                }
            },
            'outputs': head.output_metadata(),
        },
        'model_features':
            list(feature_names),
    }
    metadata.update(extra_metadata or {})
    with tf.io.gfile.GFile(written.metadata_path, 'w') as f:
      f.write(json.dumps(metadata, indent=2, sort_keys=True) + '\n')
    # Not published if the command was stopped meanwhile (a stop that a
    # destructor swallowed).
    cli.check_stop()
    tf.io.gfile.rename(staging, final)
  except BaseException:
    if tf.io.gfile.exists(staging):
      tf.io.gfile.rmtree(staging)
    raise
  return final
