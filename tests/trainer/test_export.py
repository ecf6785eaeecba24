"""The exported SavedModel: exact signatures, self-contained, and the same
transform as the Beam job.

The central promise of the design is that serving applies the very graph the
Beam job applied, so the same raw rows transformed both ways must give the
same features, and a raw row must get the same prediction whether it arrives
as a tf.Example or as raw tensors.
"""

import glob
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
import tensorflow_transform as tft
import tf_keras as keras

from core import features as raw_features
from core.config import load_config
from core.layout import ExportDir
from core.layout import resolve_export
from tests.conftest import CENSUS_CONFIG
from tests.conftest import TOY_CONFIG
from trainer import evaluate
from trainer import export
from trainer import task
from trainer.model import WideDeepModel

TOY_RAW_DTYPES = {
    'height': 'float32',
    'visits': 'int64',
    'city': 'string',
    'color': 'string'
}


@pytest.fixture(scope='module')
def toy_export(trainer_toy_model):
  model_dir, _ = trainer_toy_model
  export_dir = resolve_export(model_dir).path
  return export_dir, tf.saved_model.load(export_dir)


def _example(values):
  """A raw tf.Example; None values are left out (a missing feature)."""
  ex = tf.train.Example()
  for name, value in values.items():
    if value is None:
      continue
    f = ex.features.feature[name]
    if isinstance(value, bytes):
      f.bytes_list.value.append(value)
    elif isinstance(value, str):
      f.bytes_list.value.append(value.encode())
    elif isinstance(value, float):
      f.float_list.value.append(value)
    else:
      f.int64_list.value.append(value)
  return ex.SerializeToString()


def _serve_default(loaded, serialized):
  out = loaded.signatures['serving_default'](
      examples=tf.constant(serialized, tf.string))
  return out['probabilities'].numpy(), out['classes'].numpy()


def _serve_raw(loaded, columns):
  out = loaded.signatures['serving_raw'](**{
      k: tf.constant(v) for k, v in columns.items()
  })
  return out['probabilities'].numpy(), out['classes'].numpy()


# Rows a client may really send: clean, with stray spaces, '?' and other
# missing tokens, categories never seen in training, and absurd numbers.
TRICKY_ROWS = [
    {
        'height': 182.0,
        'visits': 3,
        'city': 'oslo',
        'color': 'red'
    },
    {
        'height': 182.0,
        'visits': 3,
        'city': '  oslo ',
        'color': ' red  '
    },
    {
        'height': 160.5,
        'visits': 0,
        'city': '?',
        'color': ''
    },
    {
        'height': 160.5,
        'visits': 0,
        'city': 'NA',
        'color': ' ? '
    },
    {
        'height': 160.5,
        'visits': 0,
        'city': 'atlantis',
        'color': 'purple'
    },
    {
        'height': 1.0e9,
        'visits': 10**15,
        'city': 'rome',
        'color': 'blue'
    },
    {
        'height': -400.0,
        'visits': -7,
        'city': 'lima',
        'color': 'green'
    },
    {
        'height': None,
        'visits': 12,
        'city': 'kyiv',
        'color': 'red'
    },
]


def _as_raw_columns(rows):
  """TRICKY_ROWS as serving_raw inputs: NaN marks a missing float."""
  cols = {k: [] for k in TOY_RAW_DTYPES}
  for row in rows:
    for k in cols:
      v = row[k]
      cols[k].append(float('nan') if v is None else v)
  return {
      'height': np.array(cols['height'], np.float32),
      'visits': np.array(cols['visits'], np.int64),
      'city': np.array(cols['city'], object),
      'color': np.array(cols['color'], object),
  }


def test_tricky_rows_same_prediction_via_example_and_raw(toy_export):
  _, loaded = toy_export
  p_ex, c_ex = _serve_default(loaded, [_example(r) for r in TRICKY_ROWS])
  p_raw, c_raw = _serve_raw(loaded, _as_raw_columns(TRICKY_ROWS))
  assert p_ex.shape == (len(TRICKY_ROWS), 1) and p_ex.dtype == np.float32
  assert c_ex.shape == (len(TRICKY_ROWS),)
  assert np.all(np.isfinite(p_ex)) and np.all((p_ex >= 0) & (p_ex <= 1))
  np.testing.assert_array_equal(p_ex, p_raw)
  np.testing.assert_array_equal(c_ex, c_raw)
  # The graph trims stray spaces and maps every missing token to one
  # category, so these pairs are the same row to the model.
  assert p_ex[0, 0] == p_ex[1, 0]
  assert p_ex[2, 0] == p_ex[3, 0]


def test_missing_features_are_imputed_not_errors(toy_export):
  _, loaded = toy_export
  empty = _example({})
  only_city = _example({'city': 'oslo'})
  all_missing = _example({
      'height': None,
      'visits': None,
      'city': '?',
      'color': 'NA'
  })
  p, _ = _serve_default(loaded, [empty, only_city, all_missing])
  assert np.all(np.isfinite(p))
  assert p[0, 0] == p[2, 0]  # absent and '?' are the same missing value
  # Strings: '' and an absent feature are both missing.
  p_raw, _ = _serve_raw(
      loaded, {
          'height': np.array([np.nan], np.float32),
          'visits': np.array([0], np.int64),
          'city': np.array([''], object),
          'color': np.array([''], object)
      })
  p_ex, _ = _serve_default(loaded, [_example({'visits': 0})])
  np.testing.assert_array_equal(p_raw, p_ex)


def test_classes_threshold_and_extra_files(toy_export, trainer_toy_model):
  export_dir, loaded = toy_export
  _, doc = trainer_toy_model
  config = load_config(TOY_CONFIG)
  p, classes = _serve_default(loaded, [_example(r) for r in TRICKY_ROWS])
  # The threshold chosen on eval (max F1 by default) is the export's.
  threshold = doc['threshold_selection']['threshold']
  assert doc['threshold'] == threshold
  assert float(loaded.threshold.numpy()) == pytest.approx(threshold, abs=1e-7)
  expected = np.where(
      p[:, 0] >= loaded.threshold.numpy(), config.label.positive.encode(),
      [c for c in config.label.classes if c != config.label.positive
      ][0].encode())
  np.testing.assert_array_equal(classes, expected)
  stored = ExportDir(export_dir).config
  assert stored.config_hash == config.config_hash
  meta = ExportDir(export_dir).metadata
  assert meta['threshold'] == threshold
  assert meta['threshold_selection'] == doc['threshold_selection']
  assert meta['label']['positive'] == config.label.positive
  assert meta['signatures']['serving_raw']['inputs'] == TOY_RAW_DTYPES
  assert os.path.basename(export_dir).isdigit()
  assert export_dir == doc['export_dir']  # the latest version is used


def _checkpoint_names(prefix):
  return [name for name, _ in tf.train.list_variables(prefix)]


def test_export_holds_the_weights_and_not_the_optimizers(toy_export):
  export_dir, loaded = toy_export
  names = _checkpoint_names(os.path.join(export_dir, 'variables', 'variables'))
  assert not [n for n in names if 'optimizer' in n]
  # Every variable the serving graph reads is in the export, and nothing else.
  restored = {v.name for v in loaded.signatures['serving_default'].variables}
  assert len(names) - 1 == len(restored)  # the object graph's own entry
  assert {n.split('/')[0] for n in names
         } == {'model', 'threshold', '_CHECKPOINTABLE_OBJECT_GRAPH'}


def _functions_called(nodes):
  names = set()
  for node in nodes:
    for value in node.attr.values():
      if value.HasField('func'):
        names.add(value.func.name)
      names.update(f.name for f in value.list.func)
  return names


def test_export_holds_no_function_that_nothing_calls(toy_export):
  # tf.Transform's layer tracks everything its loader holds, the loaded
  # transform_fn's own signature too: the whole transform graph once more
  # (594 of the Adult export's 1,876 nodes), which no serving function calls
  # and every load of the export imported. Every function saved is now
  # called from the signatures, the module's saved functions or its
  # resources' (the vocabulary tables' initializer), directly or through
  # another.
  export_dir, _ = toy_export
  saved = saved_model_pb2.SavedModel()
  with open(os.path.join(export_dir, 'saved_model.pb'), 'rb') as f:
    saved.ParseFromString(f.read())
  graph = saved.meta_graphs[0]
  library = {f.signature.name: f for f in graph.graph_def.library.function}
  called = _functions_called(graph.graph_def.node)
  for node in graph.object_graph_def.nodes:
    if node.WhichOneof('kind') == 'function':
      called.update(node.function.concrete_functions)
  reached, todo = set(), list(called)
  while todo:
    name = todo.pop()
    if name in library and name not in reached:
      reached.add(name)
      todo.extend(_functions_called(library[name].node_def))
  assert len(library) > 5
  assert set(library) == reached, sorted(set(library) - reached)


def test_exporting_leaves_the_model_its_optimizers(tmp_path):
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
  model.compile(optimizer='adam', loss='mse')
  model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0)
  model.wide_optimizer = keras.optimizers.Ftrl()
  optimizers = model.optimizer, model.wide_optimizer
  module = tf.Module()
  module.model = model
  with export._without_optimizers(model):
    tf.saved_model.save(module, str(tmp_path / 'export'))
  assert not [
      n for n in _checkpoint_names(
          str(tmp_path / 'export' / 'variables' / 'variables'))
      if 'optimizer' in n
  ]
  # Put back, and tracked again: a checkpoint of the model holds their state.
  assert (model.optimizer, model.wide_optimizer) == optimizers
  assert int(model.optimizer.iterations) == 1
  saved = tf.train.Checkpoint(model=model).save(str(tmp_path / 'ckpt'))
  names = _checkpoint_names(saved)
  assert [n for n in names if n.startswith('model/optimizer/')]
  assert [n for n in names if n.startswith('model/wide_optimizer/')]


_FRESH_PROCESS = textwrap.dedent('''
    import json, sys
    import tensorflow as tf
    import tensorflow_transform  # noqa: F401  (the only other import allowed)
    loaded = tf.saved_model.load(sys.argv[1])
    out = {'signatures': {}}
    for name, fn in loaded.signatures.items():
      out['signatures'][name] = {
          'inputs': {k: [v.dtype.name, v.shape.as_list()]
                     for k, v in fn.structured_input_signature[1].items()},
          'outputs': {k: [v.dtype.name, v.shape.as_list()]
                      for k, v in fn.structured_outputs.items()},
      }
    res = loaded.signatures['serving_default'](
        examples=tf.constant([bytes.fromhex(sys.argv[2])]))
    out['probability'] = float(res['probabilities'].numpy()[0, 0])
    out['project_modules'] = sorted(
        m for m in sys.modules if m.split('.')[0] in ('pipeline', 'trainer'))
    print(json.dumps(out))
''')


def test_export_loads_in_fresh_process_without_preprocess_dir(
    trainer_toy_preprocessed, tmp_path):
  # A model of its own, trained on a private copy of the preprocess output:
  # the copy is deleted below, and the shared output is read by tests in
  # other test processes meanwhile.
  private = str(tmp_path / 'preprocess')
  shutil.copytree(trainer_toy_preprocessed[0], private)
  doc = task.run([
      '--preprocess-dir', private, '--model-dir',
      str(tmp_path / 'model'), '--epochs', '1', '--steps-per-epoch', '3',
      '--verbose', '0'
  ])
  copy = str(tmp_path / 'models' / '1')
  shutil.copytree(doc['export_dir'], copy)
  row = _example(TRICKY_ROWS[4])
  expected, _ = _serve_default(tf.saved_model.load(doc['export_dir']), [row])
  shutil.rmtree(private)  # the export must not need it any more
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONWARNINGS='ignore')
  proc = subprocess.run([sys.executable, '-c', _FRESH_PROCESS, copy,
                         row.hex()],
                        cwd=str(tmp_path),
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out['project_modules'] == []
  outputs = {
      'probabilities': ['float32', [None, 1]],
      'classes': ['string', [None]]
  }
  assert out['signatures'] == {
      'serving_default': {
          'inputs': {
              'examples': ['string', [None]]
          },
          'outputs': outputs
      },
      'serving_raw': {
          'inputs': {
              k: [v, [None]] for k, v in TOY_RAW_DTYPES.items()
          },
          'outputs': outputs
      },
  }
  assert out['probability'] == pytest.approx(float(expected[0, 0]), abs=1e-7)


def test_export_calls_the_model_as_traced_for_scoring_the_splits(
    trainer_toy_preprocessed, tmp_path, monkeypatch):
  """trainer.task traces the model's call once: the export's signatures call
  the step that scored the eval and test splits, not a trace of their own."""
  asked = []  # (during the export, the ScoringSteps, its step)
  exporting = [False]
  calls = [0, 0]  # the model's Python calls (traces): all, in the export
  for_spec = evaluate.ScoringSteps.for_spec
  export_model = export.export_model
  model_call = WideDeepModel.__call__

  def counting_call(self, *args, **kwargs):
    calls[0] += 1
    calls[1] += exporting[0]
    return model_call(self, *args, **kwargs)

  def recording_for_spec(self, spec):
    step = for_spec(self, spec)
    asked.append((exporting[0], self, step))
    return step

  def recording_export_model(*args, **kwargs):
    exporting[0] = True
    try:
      return export_model(*args, **kwargs)
    finally:
      exporting[0] = False

  monkeypatch.setattr(evaluate.ScoringSteps, 'for_spec', recording_for_spec)
  monkeypatch.setattr(export, 'export_model', recording_export_model)
  monkeypatch.setattr(WideDeepModel, '__call__', counting_call)
  doc = task.run([
      '--preprocess-dir', trainer_toy_preprocessed[0], '--model-dir',
      str(tmp_path / 'model'), '--epochs', '1', '--steps-per-epoch', '3',
      '--verbose', '0'
  ])
  scored = [(steps, step) for during, steps, step in asked if not during]
  exported = [(steps, step) for during, steps, step in asked if during]
  assert len(scored) == 2 and exported, asked  # eval and test, then the export
  assert len({id(steps) for steps, _ in scored + exported}) == 1
  step = scored[0][1]
  assert all(s is step for _, s in scored + exported)
  assert calls[0] > 0 and calls[1] == 0, calls
  assert doc['export_dir'] and tf.saved_model.load(doc['export_dir'])


# ------------------------------------------- training / serving consistency


def _records(pattern):
  files = sorted(glob.glob(pattern))
  assert files, pattern
  return [
      r.numpy()
      for r in tf.data.TFRecordDataset(files, compression_type='GZIP')
  ]


def _columns(batches):
  out = {}
  for batch in batches:
    for k, v in batch.items():
      out.setdefault(k, []).append(np.asarray(v).reshape(-1))
  return {k: np.concatenate(v) for k, v in out.items()}


def _sorted_rows(columns, names):
  """Rows as tuples, sorted by content: both sides list the same multiset."""
  n = len(columns[names[0]])
  rows = [tuple(columns[k][i].item() for k in names) for i in range(n)]

  def key(row):
    return tuple(round(v, 4) if isinstance(v, float) else v for v in row)

  return sorted(rows, key=key)


def assert_serving_transform_matches_beam(preprocess_dir,
                                          loaded,
                                          split,
                                          batch_size=4096):
  """The exported transform of raw/{split} == the Beam output data/{split}."""
  tft_output = tft.TFTransformOutput(preprocess_dir)
  spec = tft_output.transformed_feature_spec()
  raw = _records(os.path.join(preprocess_dir, 'raw', f'{split}-*.tfrecord.gz'))
  beam_out = _records(
      os.path.join(preprocess_dir, 'data', f'{split}-*.tfrecord.gz'))
  assert len(raw) == len(beam_out) > 0
  serving = _columns({
      k: v.numpy() for k, v in loaded.transform_examples(
          tf.constant(raw[i:i + batch_size])).items()
  } for i in range(0, len(raw), batch_size))
  names = sorted(serving)
  beam = _columns({
      k: v.numpy() for k, v in tf.io.parse_example(
          tf.constant(beam_out[i:i + batch_size]), spec).items()
  } for i in range(0, len(beam_out), batch_size))
  for k in names:
    assert serving[k].dtype == beam[k].dtype, k
  float_idx = [i for i, k in enumerate(names) if serving[k].dtype == np.float32]
  a, b = _sorted_rows(serving, names), _sorted_rows(beam, names)
  assert len(a) == len(b)
  beyond_1e6 = 0
  for ra, rb in zip(a, b):
    for i, (va, vb) in enumerate(zip(ra, rb)):
      if i in float_idx:
        # Same graph, but CPU kernels compute log1p in SIMD packets plus a
        # scalar tail, which can differ by one float32 ulp depending on a
        # row's position in its batch. After log1p of a six-digit number
        # (~12, ulp ~1e-6) and z-scoring, that ulp is ~1.5e-6. So: (almost)
        # every value within 1e-6, and none beyond a few ulps.
        assert abs(va - vb) <= 1e-5, (names[i], ra, rb)
        beyond_1e6 += abs(va - vb) > 1e-6
      else:
        assert va == vb, (names[i], ra, rb)
  assert beyond_1e6 <= 1e-3 * len(a) * max(1, len(float_idx)), beyond_1e6
  return len(a)


def test_toy_serving_transform_matches_beam(trainer_toy_preprocessed,
                                            toy_export):
  preprocess_dir, manifest = trainer_toy_preprocessed
  _, loaded = toy_export
  for split in ('eval', 'test'):
    n = assert_serving_transform_matches_beam(preprocess_dir, loaded, split)
    assert n == manifest['rows'][split]


@pytest.fixture(scope='module')
def adult_quick_export(adult_preprocessed, tmp_path_factory):
  """A barely trained model on the real Adult preprocess output: enough to
  export the transform graph, which is what the consistency test is about."""
  preprocess_dir, _ = adult_preprocessed
  model_dir = str(tmp_path_factory.mktemp('adult_quick') / 'model')
  doc = task.run([
      '--preprocess-dir', preprocess_dir, '--model-dir', model_dir, '--epochs',
      '1', '--steps-per-epoch', '5', '--verbose', '0'
  ])
  return doc['export_dir'], tf.saved_model.load(doc['export_dir'])


def test_adult_serving_transform_matches_beam(adult_preprocessed,
                                              adult_quick_export):
  preprocess_dir, manifest = adult_preprocessed
  _, loaded = adult_quick_export
  n = assert_serving_transform_matches_beam(preprocess_dir, loaded, 'test')
  assert n == manifest['rows']['test'] == 16281


def test_adult_predictions_same_via_example_and_raw(adult_preprocessed,
                                                    adult_quick_export):
  preprocess_dir, _ = adult_preprocessed
  _, loaded = adult_quick_export
  config = load_config(CENSUS_CONFIG)
  spec = raw_features.raw_feature_spec(config, include_label=False)
  raw = _records(os.path.join(preprocess_dir, 'raw', 'eval-*.tfrecord.gz'))
  raw = raw[:3000]
  parsed = tf.io.parse_example(tf.constant(raw), spec)
  columns = {}
  for name, sp in parsed.items():
    dense = tf.sparse.to_dense(
        sp, default_value=('' if sp.dtype == tf.string else 0)).numpy()
    assert dense.shape[1] == 1
    if sp.dtype != tf.string:
      # Adult has no missing numbers; a missing int has no raw-tensor form.
      present = np.zeros(len(raw), bool)
      present[sp.indices.numpy()[:, 0]] = True
      assert present.all(), name
    columns[name] = dense[:, 0]
  p_ex, c_ex = _serve_default(loaded, raw)
  p_raw, c_raw = _serve_raw(loaded, columns)
  np.testing.assert_array_equal(p_ex, p_raw)
  np.testing.assert_array_equal(c_ex, c_raw)
  assert not math.isnan(float(p_ex.mean()))
