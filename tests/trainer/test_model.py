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

from core.config import load_config
from core.dir_lock import DirLock
from core.layout import ModelDir
from core.layout import PreprocessOutput
from tests.conftest import ROOT
from tests.conftest import TOY_CONFIG
from trainer import data
from trainer import heads
from trainer import hparams
from trainer import model
from trainer import task


def _binary_head():
  return heads.make_head(load_config(TOY_CONFIG))


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
  assert set(feats) == {
      'height', 'height_bucket', 'visits', 'city', 'color',
      'city_x_height_bucket'
  }
  assert not feats['height'].categorical and feats['height'].deep
  assert feats['height_bucket'].num_ids == 4
  assert feats['height_bucket'].wide and not feats['height_bucket'].deep
  assert feats['city_x_height_bucket'].num_ids == 50
  # Vocabulary ids plus one OOV bucket, as recorded in the int_domain.
  assert feats['city'].num_ids == tft_output.vocabulary_size_by_name('city') + 1
  assert feats['city'].wide and feats['city'].deep
  assert feats['city'].embedding_dim == model.embedding_dim(
      feats['city'].num_ids, None, hp)
  with_buckets = {
      f.name: f for f in model.model_features(
          config, tft_output, hparams.HParams(deep_buckets=True))
  }
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
      model.ModelFeature(
          'cat',
          tf.int64,
          True,
          wide=True,
          deep=True,
          num_ids=5,
          embedding_dim=3),
      model.ModelFeature(
          'cross', tf.int64, True, wide=True, deep=False, num_ids=20),
  ]
  hp = hparams.HParams(hidden_units=(8,))
  m = model.compile_model(
      model.build_model(feats, hp, _binary_head()), hp, _binary_head())
  rng = np.random.default_rng(0)
  x = {
      'num': rng.normal(size=256).astype('float32'),
      'cat': rng.integers(0, 5, 256),
      'cross': rng.integers(0, 20, 256)
  }
  y = (x['num'] + (x['cat'] == 2) > 0.5).astype('float32').reshape(-1, 1)
  wide_layers = [
      l for l in m.layers
      if l.name.startswith(model.WIDE_PREFIX) and l.trainable_weights
  ]
  # The wide part's categorical weights are one table (EmbeddingTable).
  assert [l.name for l in wide_layers] == ['wide_weights']
  assert [v.shape.as_list() for v in wide_layers[0].trainable_weights
         ] == [[5 + 20, 1]]
  before = {v.name: v.numpy().copy() for v in m.trainable_variables}
  m.fit(x, y, batch_size=32, epochs=1, verbose=0)
  assert int(m.wide_optimizer.iterations) == 8
  assert int(m.optimizer.iterations) == 8
  assert isinstance(m.wide_optimizer,
                    type(model.make_optimizer('ftrl', 0.1, hp, wide=True)))
  for v in m.trainable_variables:
    assert not np.array_equal(before[v.name], v.numpy()), v.name


def _toy_input(preprocess_dir):
  """What the toy datasets are made of: the label column, the transformed
  feature spec, and `files(split)`, a split's data files."""
  return (load_config(TOY_CONFIG).label.column,
          tft.TFTransformOutput(preprocess_dir).transformed_feature_spec(),
          PreprocessOutput(preprocess_dir).require_data_files)


def test_input_pipeline_reads_every_row_once(trainer_toy_preprocessed):
  preprocess_dir, manifest = trainer_toy_preprocessed
  label, spec, files = _toy_input(preprocess_dir)
  ds = data.make_dataset(
      files('eval'), spec, label, 100, training=False, cache=True)
  labels = []
  for x, y in ds:
    assert y.shape[1:] == (1,) and y.dtype == tf.float32
    assert label not in x
    labels.append(y.numpy().reshape(-1))
  labels = np.concatenate(labels)
  assert labels.size == manifest['rows']['eval']
  assert set(np.unique(labels)) <= {0.0, 1.0}
  train = data.make_dataset(
      files('train'), spec, label, 64, training=True, seed=1, repeat=True)
  sizes = [int(y.shape[0]) for _, y in train.take(40)]
  assert sizes == [64] * 40  # repeated: never a short final batch


def _epochs(ds, n):
  """n epochs of `ds`, one iterator each (as Keras' fit makes them)."""
  return [[(x, y.numpy()) for x, y in ds] for _ in range(n)]


def _assert_same_batches(got, want):
  """One epoch's (features, label) batches against another's, batch by
  batch."""
  assert len(got) == len(want)
  for (x, y), (wx, wy) in zip(got, want):
    np.testing.assert_array_equal(y, wy)
    assert sorted(x) == sorted(wx)
    for name in x:
      np.testing.assert_array_equal(x[name].numpy(), wx[name].numpy())


def test_training_batches_are_those_of_the_autotuned_pipeline(
    trainer_toy_preprocessed):
  # The datasets carry no autotuning thread (deleting an iterator waits for
  # it, a stall between epochs), and that changes no batch: the model
  # trained on them is the same.
  preprocess_dir, _ = trainer_toy_preprocessed
  label, spec, files = _toy_input(preprocess_dir)

  def train_dataset():
    return data.make_dataset(
        files('train'),
        spec,
        label,
        32,
        training=True,
        seed=3,
        cache=True,
        shuffle_buffer=50)

  untuned = train_dataset()
  assert untuned.options().autotune.enabled is False
  tuning = tf.data.Options()
  tuning.autotune.enabled = True
  tuned = train_dataset().with_options(tuning)
  assert tuned.options().autotune.enabled is True
  got, want = _epochs(untuned, 3), _epochs(tuned, 3)
  assert [len(e) for e in got] == [len(e) for e in want]
  assert len(got[0]) > 2
  for got_epoch, want_epoch in zip(got, want):
    _assert_same_batches(got_epoch, want_epoch)
  # Reshuffled each epoch, as before.
  first, second = got[0][0][0], got[1][0][0]
  assert any(
      not np.array_equal(first[n].numpy(), second[n].numpy()) for n in first)


def _upstream(ds):
  """`ds` and the datasets it reads from, outermost first."""
  chain = [ds]
  while getattr(chain[-1], '_input_dataset', None) is not None:
    chain.append(chain[-1]._input_dataset)  # pylint: disable=protected-access
  return [type(d).__name__.lstrip('_') for d in chain]


def test_evaluation_batches_are_cached_parsed_and_the_same_every_pass(
    trainer_toy_preprocessed):
  # Keras makes a new iterator of the validation data every epoch; cached as
  # parsed batches, a later pass reads neither a file nor a record, and it
  # gives the batches of an uncached pass.
  preprocess_dir, manifest = trainer_toy_preprocessed
  label, spec, files = _toy_input(preprocess_dir)

  def eval_dataset(cache):
    return data.make_dataset(
        files('eval'), spec, label, 16, training=False, cache=cache)

  cached = eval_dataset(True)
  names = _upstream(cached)
  assert names.index('CacheDataset') < names.index('ParallelMapDataset'), names
  assert 'CacheDataset' not in _upstream(eval_dataset(False))
  want = _epochs(eval_dataset(False), 1)[0]
  assert sum(len(y) for _, y in want) == manifest['rows']['eval']
  for got in _epochs(cached, 3):
    _assert_same_batches(got, want)
  # Training data still caches its records, ahead of the shuffle.
  train = _upstream(
      data.make_dataset(
          files('train'), spec, label, 16, training=True, seed=1, cache=True))
  assert train.index('ParallelMapDataset') < train.index(
      'ShuffleDataset') < train.index('CacheDataset'), train


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
  # The threshold is the eval split's max-F1 threshold (the default
  # objective), and every split's metrics are computed at it.
  selection = saved['threshold_selection']
  assert selection['objective'] == 'max_f1' and selection['split'] == 'eval'
  assert saved['threshold'] == selection['threshold']
  for split in ('eval', 'test'):
    assert saved[split]['threshold'] == saved['threshold']
    assert saved['at_threshold_0.5'][split]['threshold'] == 0.5
    assert saved['at_threshold_0.5'][split]['roc_auc'] == saved[split][
        'roc_auc']
  assert saved['eval']['f1'] == pytest.approx(selection['f1'])
  assert saved['eval']['f1'] >= saved['at_threshold_0.5']['eval']['f1']
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
  proc = subprocess.run([sys.executable, '-c', script],
                        cwd=str(ROOT),
                        env=_env(),
                        capture_output=True,
                        text=True,
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
  rc = task.main([
      '--preprocess-dir',
      str(tmp_path / 'nowhere'), '--model-dir',
      str(tmp_path / 'm')
  ])
  assert rc == 2
  assert 'config.yaml' in capsys.readouterr().err


def test_a_second_trainer_on_a_model_dir_stops_with_one_line(
    trainer_toy_preprocessed, tmp_path, capsys):
  """While a trainer (or trainer.push) holds the model directory, another
  trainer writes nothing into it, and says which run holds it."""
  preprocess_dir, _ = trainer_toy_preprocessed
  model_dir = str(tmp_path / 'm')
  os.makedirs(model_dir)
  with DirLock(ModelDir(model_dir).lock_path, 'the first run'):
    rc = task.main(
        ['--preprocess-dir', preprocess_dir, '--model-dir', model_dir])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1, err
  assert err[0].startswith(f'trainer: error: --model-dir {model_dir}: another '
                           f'run is writing it (pid {os.getpid()} on ')
  assert err[0].endswith(f'(it holds {model_dir}/.lock)')
  assert os.listdir(model_dir) == []


# ------------------------------------------- ablations, schedules, imbalance


def test_model_type_keeps_one_part(trainer_toy_preprocessed):
  preprocess_dir, _ = trainer_toy_preprocessed
  config = load_config(TOY_CONFIG)
  tft_output = tft.TFTransformOutput(preprocess_dir)
  parts = {}
  for model_type in ('wide_deep', 'wide', 'deep'):
    hp = hparams.HParams(model_type=model_type)
    feats = model.model_features(config, tft_output, hp)
    m = model.build_model(feats, hp, _binary_head())
    names = {l.name for l in m.layers if l.trainable_weights}
    parts[model_type] = ({f.name for f in feats},
                         any(n.startswith(model.WIDE_PREFIX) for n in names),
                         any(n.startswith(model.DEEP_PREFIX) for n in names))
  assert parts['wide_deep'][1:] == (True, True)
  # Wide: the linear model over ids, buckets and crosses; no scaled numerics.
  assert parts['wide'] == ({
      'height_bucket', 'city', 'color', 'city_x_height_bucket'
  }, True, False)
  # Deep: embeddings and numerics; buckets and crosses are wide-only here.
  assert parts['deep'] == ({'height', 'visits', 'city', 'color'}, False, True)
  m = model.compile_model(
      model.build_model(
          model.model_features(config, tft_output,
                               hparams.HParams(model_type='deep')),
          hparams.HParams(), _binary_head()), hparams.HParams(), _binary_head())
  assert m.wide_optimizer is None  # one optimizer for an MLP alone


def test_cosine_schedule_and_plateau_callback():
  hp = hparams.HParams(lr_schedule='cosine', epochs=4, lr_min_fraction=0.1)
  lr = model.learning_rate(0.01, hp, steps_per_epoch=25)
  assert float(lr(0)) == pytest.approx(0.01)
  assert float(lr(50)) == pytest.approx(0.01 * (0.1 + 0.9 * 0.5))
  assert float(lr(100)) == pytest.approx(0.001)
  assert model.learning_rate(0.01, hparams.HParams(), None) == 0.01

  feats = [
      model.ModelFeature('num', tf.float32, False, wide=False, deep=True),
      model.ModelFeature(
          'cat', tf.int64, True, wide=True, deep=False, num_ids=5)
  ]
  hp = hparams.HParams(
      hidden_units=(4,), wide_learning_rate=0.2, deep_learning_rate=0.01)
  m = model.compile_model(
      model.build_model(feats, hp, _binary_head()), hp, _binary_head())
  cb = model.ReduceOnPlateau(
      'val_auc', factor=0.5, patience=2, min_fraction=0.3)
  cb.set_model(m)
  cb.on_train_begin()
  for epoch, auc in enumerate([0.7, 0.8, 0.79, 0.78, 0.77, 0.76, 0.75, 0.74]):
    cb.on_epoch_end(epoch, {'val_auc': auc})
  # Patience 2: halved after the 2nd epoch in a row without improvement
  # (epoch 4), again at 6 and 8, floored at 30% of the start (0.25 -> 0.3).
  assert cb.reductions == [4, 6, 8]
  assert float(m.optimizer.learning_rate.numpy()) == pytest.approx(0.003)
  assert float(m.wide_optimizer.learning_rate.numpy()) == pytest.approx(0.06)


def _labels_of(ds, n_batches):
  return np.concatenate([y.numpy().reshape(-1) for _, y in ds.take(n_batches)])


def test_oversampling_changes_train_stream_only(trainer_toy_preprocessed):
  preprocess_dir, manifest = trainer_toy_preprocessed
  label, spec, files = _toy_input(preprocess_dir)
  train_files = files('train')
  labels = data.label_summary(train_files, spec, label)
  assert labels['rows'] == manifest['rows']['train']
  natural = labels['counts'][1] / labels['rows']
  assert natural < 0.4
  ds = data.make_dataset(
      train_files,
      spec,
      label,
      100,
      training=True,
      seed=4,
      cache=True,
      oversample=0.5)
  y = _labels_of(ds, 60)  # infinite: more rows than the split has
  assert y.size == 6000
  # Binomial(6000, 0.5): the standard deviation of the share is 0.0065.
  assert abs(y.mean() - 0.5) < 0.03
  again = _labels_of(
      data.make_dataset(
          train_files,
          spec,
          label,
          100,
          training=True,
          seed=4,
          cache=True,
          oversample=0.5), 60)
  np.testing.assert_array_equal(y, again)  # same seed, same stream
  plain = _labels_of(
      data.make_dataset(train_files, spec, label, 100, training=True, seed=4),
      10**6)
  assert plain.size == labels['rows'] and plain.sum() == labels['counts'][1]
  # Eval is read as it is, whatever the training stream does.
  eval_y = _labels_of(
      data.make_dataset(files('eval'), spec, label, 100, training=False), 10**6)
  assert eval_y.size == manifest['rows']['eval']


def test_hash_folds_partition_the_records(trainer_toy_preprocessed):
  preprocess_dir, manifest = trainer_toy_preprocessed
  files = (
      PreprocessOutput(preprocess_dir).require_data_files('train') +
      PreprocessOutput(preprocess_dir).require_data_files('eval'))
  raw = tf.data.TFRecordDataset(files, compression_type='GZIP')
  everything = sorted(r.numpy() for r in raw)
  held_out = []
  for fold in range(3):
    inside = [r.numpy() for r in raw.filter(data.fold_filter(3, fold, True))]
    outside = [r.numpy() for r in raw.filter(data.fold_filter(3, fold, False))]
    assert sorted(inside + outside) == everything
    assert 0.2 < len(inside) / len(everything) < 0.46
    held_out.extend(inside)
    # A record's fold depends on its bytes only: the same in any order.
    shuffled = raw.shuffle(
        5000, seed=fold).filter(data.fold_filter(3, fold, True))
    assert sorted(r.numpy() for r in shuffled) == sorted(inside)
  assert sorted(held_out) == everything  # each record held out exactly once
  assert len(everything) == manifest['rows']['train'] + manifest['rows']['eval']


def test_kfold_cross_validation(trainer_toy_preprocessed, tmp_path, capsys):
  """--folds 3: three models on hash folds of train + eval, mean and std
  of their held-out metrics; oversampling applies to each fold's training
  part only."""
  preprocess_dir, manifest = trainer_toy_preprocessed
  model_dir = str(tmp_path / 'cv')
  rc = task.main([
      '--preprocess-dir', preprocess_dir, '--model-dir', model_dir, '--folds',
      '3', '--epochs', '2', '--batch-size', '64', '--oversample', '0.5',
      '--verbose', '0', '--seed', '3'
  ])
  assert rc == 0
  out = capsys.readouterr().out
  assert '3-fold cross-validation' in out and ' ± ' in out
  with open(os.path.join(model_dir, 'metrics.json')) as f:
    doc = json.load(f)
  assert doc['mode'] == 'kfold' and doc['folds'] == 3
  folds = doc['per_fold']
  assert [f['fold'] for f in folds] == [0, 1, 2]
  total = manifest['rows']['train'] + manifest['rows']['eval']
  assert sum(f['cv']['rows'] for f in folds) == total
  for f in folds:
    assert f['train_rows'] + f['cv']['rows'] == total
    assert f['test']['rows'] == manifest['rows']['test']
    assert f['cv']['threshold'] == f['threshold']
    assert f['epochs_run'] == 2
    # Trained on a 50/50 stream, the model predicts the positive class far
    # more often than its ~30% base rate at threshold 0.5.
    at_half = f['cv_at_threshold_0.5']
    assert at_half['predicted_positive_rate'] > at_half['base_rate']
  for name in ('cv', 'test', 'cv_at_threshold_0.5', 'test_at_threshold_0.5'):
    for metric in ('accuracy', 'roc_auc', 'f1', 'recall'):
      values = [f[name][metric] for f in folds]
      stat = doc['summary'][name][metric]
      assert stat['mean'] == pytest.approx(np.mean(values))
      assert stat['std'] == pytest.approx(np.std(values, ddof=1))
      assert f'{stat["mean"]:.4f} ± {stat["std"]:.4f}' in out or (
          metric == 'roc_auc' and 'ROC AUC' in out)
  assert doc['summary']['cv']['roc_auc']['mean'] > 0.6
  assert not os.path.exists(os.path.join(model_dir, 'export'))


def test_task_rejects_an_unknown_slice_column(trainer_toy_preprocessed,
                                              tmp_path, capsys):
  preprocess_dir, _ = trainer_toy_preprocessed
  rc = task.main([
      '--preprocess-dir', preprocess_dir, '--model-dir',
      str(tmp_path / 'm'), '--slices', 'city,shoe_size'
  ])
  assert rc == 2
  err = capsys.readouterr().err
  assert "'shoe_size'" in err and 'height' in err
  assert not os.path.exists(str(tmp_path / 'm' / 'metrics.json'))


def test_keras_internals_are_not_rewritten_by_autograph():
  # Converting tf_keras' step functions from source cost the first epoch
  # about 1 s; the model's own steps are exempt by decorator.
  from tensorflow.python.autograph.impl import conversion
  import tf_keras

  assert conversion.is_allowlisted(tf_keras.Model.make_train_function)
  assert conversion.is_allowlisted(tf_keras.metrics.AUC.update_state)
  # Nothing else is exempted with it.
  assert not conversion.is_allowlisted(model.build_model)
