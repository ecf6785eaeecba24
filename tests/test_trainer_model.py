"""The trainer: input pipeline, model structure, training, metrics, strategies.

Most tests use the generated toy dataset (tests/data/toy.yaml), whose label
depends on height and city, so a model that learns anything beats chance by a
wide margin while one that learns nothing sits at AUC 0.5.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from pipeline.config import load_config
from trainer import data, hparams, model, task
from tests.conftest import ROOT, TOY_CONFIG


def _env():
  env = dict(os.environ)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  env['PYTHONWARNINGS'] = 'ignore'
  env['PYTHONPATH'] = str(ROOT) + os.pathsep + env.get('PYTHONPATH', '')
  return env


def test_model_features_follow_config_and_schema(trainer_toy_preprocessed):
  preprocess_dir, _ = trainer_toy_preprocessed
  config = load_config(TOY_CONFIG)
  tft_output = tft.TFTransformOutput(preprocess_dir)
  hp = hparams.HParams()
  feats = {f.name: f for f in model.model_features(config, tft_output, hp)}
  assert set(feats) == {'height', 'height_bucket', 'visits', 'city', 'color',
                        'city_x_height_bucket'}
  assert not feats['height'].categorical and feats['height'].deep
  assert feats['height_bucket'].num_ids == 4
  assert feats['height_bucket'].wide and not feats['height_bucket'].deep
  assert feats['city_x_height_bucket'].num_ids == 50
  # Vocabulary ids plus one OOV bucket, as recorded in the int_domain.
  assert feats['city'].num_ids == tft_output.vocabulary_size_by_name(
      'city') + 1
  assert feats['city'].wide and feats['city'].deep
  assert feats['city'].embedding_dim == model.embedding_dim(
      feats['city'].num_ids, None, hp)
  with_buckets = {f.name: f for f in model.model_features(
      config, tft_output, hparams.HParams(deep_buckets=True))}
  assert with_buckets['height_bucket'].deep
  assert not with_buckets['city_x_height_bucket'].deep


def test_embedding_dim_rule():
  hp = hparams.HParams()
  assert model.embedding_dim(16, None, hp) == 12  # 6 * 16 ** 0.25
  assert model.embedding_dim(2, None, hp) == 7
  assert model.embedding_dim(10**9, None, hp) == hp.embedding_max_dim
  assert model.embedding_dim(16, 3, hp) == 3  # the config wins


def test_each_optimizer_updates_only_its_part():
  feats = [
      model.ModelFeature('num', tf.float32, False, wide=False, deep=True),
      model.ModelFeature('cat', tf.int64, True, wide=True, deep=True,
                         num_ids=5, embedding_dim=3),
      model.ModelFeature('cross', tf.int64, True, wide=True, deep=False,
                         num_ids=20),
  ]
  hp = hparams.HParams(hidden_units=(8,))
  m = model.compile_model(model.build_model(feats, hp), hp)
  rng = np.random.default_rng(0)
  x = {'num': rng.normal(size=256).astype('float32'),
       'cat': rng.integers(0, 5, 256), 'cross': rng.integers(0, 20, 256)}
  y = (x['num'] + (x['cat'] == 2) > 0.5).astype('float32').reshape(-1, 1)
  wide_layers = [l for l in m.layers
                 if l.name.startswith(model.WIDE_PREFIX) and l.trainable_weights]
  assert {l.name for l in wide_layers} == {'wide_cat', 'wide_cross'}
  before = {v.name: v.numpy().copy() for v in m.trainable_variables}
  m.fit(x, y, batch_size=32, epochs=1, verbose=0)
  assert int(m.wide_optimizer.iterations) == 8
  assert int(m.optimizer.iterations) == 8
  assert isinstance(m.wide_optimizer, type(model.make_optimizer(
      'ftrl', 0.1, hp, wide=True)))
  for v in m.trainable_variables:
    assert not np.array_equal(before[v.name], v.numpy()), v.name


def test_input_pipeline_reads_every_row_once(trainer_toy_preprocessed):
  preprocess_dir, manifest = trainer_toy_preprocessed
  config = load_config(TOY_CONFIG)
  spec = tft.TFTransformOutput(preprocess_dir).transformed_feature_spec()
  files = data.require_files(preprocess_dir, 'eval')
  ds = data.make_dataset(files, spec, config.label.column, 100,
                         training=False, cache=True)
  labels = []
  for x, y in ds:
    assert y.shape[1:] == (1,) and y.dtype == tf.float32
    assert config.label.column not in x
    labels.append(y.numpy().reshape(-1))
  labels = np.concatenate(labels)
  assert labels.size == manifest['rows']['eval']
  assert set(np.unique(labels)) <= {0.0, 1.0}
  train = data.make_dataset(data.require_files(preprocess_dir, 'train'), spec,
                            config.label.column, 64, training=True, seed=1,
                            repeat=True)
  sizes = [int(y.shape[0]) for _, y in train.take(40)]
  assert sizes == [64] * 40  # repeated: never a short final batch


def test_short_training_beats_chance(trainer_toy_model):
  model_dir, doc = trainer_toy_model
  # The toy label is a noisy function of height and city; its best possible
  # AUC is about 0.75. An untrained or broken model scores about 0.5.
  assert doc['eval']['roc_auc'] > 0.65, doc['eval']
  assert doc['test']['roc_auc'] > 0.65, doc['test']
  with open(os.path.join(model_dir, 'metrics.json')) as f:
    saved = json.load(f)
  for split in ('eval', 'test'):
    m = saved[split]
    for key in ('accuracy', 'roc_auc', 'pr_auc', 'precision', 'recall', 'f1',
                'log_loss', 'base_rate', 'threshold'):
      assert isinstance(m[key], float), key
    cm = m['confusion_matrix']
    assert cm['tn'] + cm['fp'] + cm['fn'] + cm['tp'] == m['rows']
  assert saved['threshold'] == 0.5
  assert saved['training']['best_epoch'] >= 1
  assert tf.io.gfile.glob(os.path.join(model_dir, 'logs', '*', 'events.*'))
  assert os.path.isdir(saved['export_dir'])


def test_mirrored_strategy_on_two_cpu_replicas(trainer_toy_preprocessed,
                                               tmp_path):
  """Real multi-replica training: two logical CPU devices, MirroredStrategy.

  Runs in a fresh process because logical devices must be configured before
  TensorFlow initialises, which has already happened in this one.
  """
  preprocess_dir, _ = trainer_toy_preprocessed
  model_dir = str(tmp_path / 'mirrored')
  script = textwrap.dedent(f'''
      import sys
      import tensorflow as tf
      cpu = tf.config.list_physical_devices('CPU')[0]
      tf.config.set_logical_device_configuration(
          cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
      from trainer import task
      sys.exit(task.main([
          '--preprocess-dir', {preprocess_dir!r}, '--model-dir', {model_dir!r},
          '--distribution-strategy', 'mirrored', '--epochs', '3',
          '--batch-size', '64', '--verbose', '0']))
  ''')
  proc = subprocess.run([sys.executable, '-c', script], cwd=str(ROOT),
                        env=_env(), capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(model_dir, 'metrics.json')) as f:
    doc = json.load(f)
  assert doc['training']['replicas'] == 2
  assert doc['training']['distribution_strategy'] == 'mirrored'
  assert doc['training']['epochs_run'] == 3
  assert doc['eval']['roc_auc'] > 0.6
  assert os.path.exists(os.path.join(doc['export_dir'], 'saved_model.pb'))
  assert 'ROC AUC' in proc.stdout


def test_task_reports_a_bad_preprocess_dir(tmp_path, capsys):
  rc = task.main(['--preprocess-dir', str(tmp_path / 'nowhere'),
                  '--model-dir', str(tmp_path / 'm')])
  assert rc == 2
  assert 'config.yaml' in capsys.readouterr().err
