"""tf.Transform's vocabulary analyzers in fewer Beam stages.

For each vocabulary, tf.Transform (1.16, `beam/analyzer_impls.py`) writes the
file and counts the tokens before and after its thresholds with generic Beam
transforms, each of which the runner sets up and runs as stages of their own
(about 30 ms each) for a few dozen tokens:
- `_VocabularyOrderAndWriteImpl` orders the counts in one DoFn and writes the
  lines with `beam.io.WriteToText`: Beam's file sink (initialise, write the
  bundle, group, pre-finalise, finalise) and a wait for the file, six fused
  stages;
- `_VocabularyCountImpl` counts with `beam.combiners.Count.Globally()`: a
  combine's merge and its default for an empty input, two stages, twice.
For Adult's 8 vocabularies that is 80 of the job's 202 stages.

`install()` registers in their place implementations that do each in one
stage, a DoFn reading its input as a side input:
- the file: the counts ordered with tf.Transform's own code (its batch
  pre-sort and `_OrderElementsFn`), the lines written from that DoFn to a
  temporary file beside the vocabulary's path and renamed into place, in the
  bytes WriteToText writes (each line as Beam's ToBytesCoder encodes it, then
  a newline; compressed as the path's extension says). Vocabularies
  tf.Transform writes otherwise (`tfrecord_gzip`, or counts that arrive
  sorted, with `top_k`) keep its implementation.
- the count: the tokens counted, at least 1 (tf.Transform's own floor, for
  the dummy token an empty vocabulary gets).
The same files, sizes and transform graph.

Each of those DoFns runs once, started by an impulse. They all start from
one impulse of the pipeline's, so the runner fuses them into one stage
where it can: into one stage with the impulse unless a DoFn's side input is
computed downstream of another (a vocabulary of a later analysis phase,
say), which the runner then runs as a stage of its own. For Adult's 8
vocabularies that is one stage instead of 24 (three each: the file, and
the two counts).
"""

import hashlib
import os
from typing import Any, Dict
import uuid
import weakref

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
import numpy as np
from tensorflow_transform import analyzer_nodes
from tensorflow_transform.beam import analyzer_impls
from tensorflow_transform.beam import common

# tf.Transform's implementations and parts, which these extend and reuse.
_LIBRARY_WRITE_IMPL = analyzer_impls._VocabularyOrderAndWriteImpl  # pylint: disable=protected-access
_LIBRARY_ORDER_FN = analyzer_impls._OrderElementsFn  # pylint: disable=protected-access
_BATCH_AND_PRE_SORT = analyzer_impls._BatchAndPreSort  # pylint: disable=protected-access
_LIBRARY_COUNT_IMPL = analyzer_impls._VocabularyCountImpl  # pylint: disable=protected-access
_TEMP_INFIX = '.writing-'

# pipeline -> the one impulse its vocabulary stages start from.
_IMPULSES: 'weakref.WeakKeyDictionary[beam.Pipeline, beam.PCollection]' = (
    weakref.WeakKeyDictionary())


def _started(pipeline: beam.Pipeline) -> beam.PCollection:
  """The pipeline's impulse for the DoFns that run once: made by the first
    vocabulary stage that asks, under its label."""
  impulse = _IMPULSES.get(pipeline)
  if impulse is None:
    impulse = _IMPULSES[pipeline] = pipeline | 'Start' >> beam.Impulse()
  return impulse


def _fingerprint(count_and_token):
  """tf.Transform's order for `fingerprint_shuffle`."""
  return hashlib.sha1(count_and_token[1]).digest()


class _OrderAndWriteFn(_LIBRARY_ORDER_FN):
  """tf.Transform's ordering of a vocabulary, its lines written to `path`;
  yields the path once the file is in place."""

  def __init__(self, store_frequency, sort_kwargs, input_dtype, path: str):
    super().__init__(store_frequency, sort_kwargs, input_dtype)
    self._path = path

  def process(self, unused_element, batched_counts_iter, reserved_tokens=None):
    encode = coders.ToBytesCoder().encode
    temp = f'{self._path}{_TEMP_INFIX}{uuid.uuid4().hex}'
    with FileSystems.create(
        temp,
        compression_type=CompressionTypes.detect_compression_type(
            self._path)) as f:
      for line in super().process(unused_element, batched_counts_iter,
                                  reserved_tokens):
        f.write(encode(line) + b'\n')
    FileSystems.rename([temp], [self._path])
    yield np.array(self._path)


class _VocabularyOrderAndWriteImpl(_LIBRARY_WRITE_IMPL):
  """tf.Transform's VocabularyOrderAndWrite, in one stage for a text file of
  counts that arrive unordered (see the module's docstring)."""

  def expand(self, inputs):
    if self._file_format != 'text' or self._input_is_sorted:
      return super().expand(inputs)
    counts = inputs[0]
    if self._fingerprint_shuffle:
      sort_kwargs: Dict[str, Any] = dict(key=_fingerprint)
    else:
      sort_kwargs = dict(reverse=True)  # the largest count first
    batched_counts = counts | 'BatchAndPreSort' >> _BATCH_AND_PRE_SORT(  # pylint: disable=no-value-for-parameter
        sort_kwargs=sort_kwargs)
    side_inputs: Dict[str, beam.pvalue.AsSideInput] = dict(
        batched_counts_iter=beam.pvalue.AsIter(batched_counts))
    if len(inputs) > 1:
      side_inputs['reserved_tokens'] = beam.pvalue.AsSingleton(inputs[1])
    path = os.path.join(self._base_temp_dir, self._vocab_filename)
    return (_started(counts.pipeline)
            | 'OrderAndWrite' >> beam.ParDo(
                _OrderAndWriteFn(self._store_frequency, sort_kwargs,
                                 self._input_dtype, path), **side_inputs))


class _VocabularyCountImpl(_LIBRARY_COUNT_IMPL):
  """tf.Transform's VocabularyCount, in one stage."""

  def expand(self, inputs):
    pcoll, = inputs
    return (
        _started(pcoll.pipeline)
        | 'TotalVocabSize' >> beam.Map(self._count, beam.pvalue.AsIter(pcoll)))

  def _count(self, unused_element, tokens) -> np.int64:
    return self._format_count(sum(1 for _ in tokens))


# tf.Transform's operation -> the implementation registered for it here.
_IMPLEMENTATIONS = {
    analyzer_nodes.VocabularyOrderAndWrite: _VocabularyOrderAndWriteImpl,
    analyzer_nodes.VocabularyCount: _VocabularyCountImpl,
}


def install() -> None:
  """Idempotent."""
  for operation, implementation in _IMPLEMENTATIONS.items():
    wrapper = common._PTRANSFORM_BY_OPERATION_DEF_SUBCLASS[operation]  # pylint: disable=protected-access
    # tf.Transform's registry holds one implementation per environment tag;
    # its own is registered for every environment.
    wrapper._ptransform_by_tag[wrapper._GENERAL_ENVIRONMENT_TAG] = (  # pylint: disable=protected-access
        implementation)
