"""Throughput of the trainer's tf.data input against in-memory tensors.

    .venv/bin/python -m benchmarks.training_input --preprocess-dir DIR
        [--split train] [--batch-size 256] [--epochs 3] [--repeat 3]
        [--shuffle-buffer 10000] [--json FILE]

DIR is a `python -m pipeline.preprocess` output directory. Two datasets of
the same split, batch size and shuffle buffer are iterated to the end, epoch
after epoch:

  tfrecord    trainer.data.make_dataset over DIR/data/<split>-*.tfrecord.gz,
              as the trainer builds it for training (file and record shuffle,
              cache, batch, parallel parse, prefetch). The first epoch reads
              and decompresses the files; later ones come from the cache.
  in_memory   tf.data.Dataset.from_tensor_slices of the same records, parsed
              once beforehand into (features, label) tensors, then the same
              shuffle, batch and prefetch: what an input pipeline with no I/O
              and no parsing at all delivers.

For each epoch it prints examples/s of both and the ratio tfrecord /
in_memory; the input pipeline keeps up when the ratio is near 1. Each
measurement is repeated (--repeat) and the median is reported, since other
work on the machine moves single runs. Nothing is asserted.
"""

import argparse
import json
import os
import statistics
import sys
import time
from typing import Dict, List

from core import quiet

# TensorFlow is imported with its start-up noise filtered (core/quiet.py).
with quiet.tensorflow_startup():
  import tensorflow as tf
  import tensorflow_transform as tft

from core.config import load_config
from core.layout import PreprocessOutput
from trainer import data


def _label_key(preprocess_dir: str) -> str:
  return load_config(os.path.join(preprocess_dir, 'config.yaml')).label.column


def _in_memory(files: List[str], spec, label_key: str):
  """All records of `files`, parsed: (features dict, label [N, 1] float32)."""
  records = tf.data.TFRecordDataset(files, compression_type='GZIP')
  serialized = tf.stack(list(records.batch(1 << 16).unbatch()))
  features = tf.io.parse_example(serialized, spec)
  label = features.pop(label_key)
  return features, tf.reshape(tf.cast(label, tf.float32), [-1, 1])


def _time_epochs(dataset: tf.data.Dataset, epochs: int) -> List[Dict]:
  out = []
  iterator_source = dataset
  for _ in range(epochs):
    start = time.perf_counter()
    examples = 0
    for _, label in iterator_source:
      examples += int(label.shape[0])
    seconds = time.perf_counter() - start
    out.append({
        'examples': examples,
        'seconds': seconds,
        'examples_per_s': examples / seconds
    })
  return out


def measure(preprocess_dir: str, split: str, batch_size: int, epochs: int,
            shuffle_buffer: int, seed: int) -> Dict[str, List[Dict]]:
  files = PreprocessOutput(preprocess_dir).require_data_files(split)
  spec = data.feature_spec(tft.TFTransformOutput(preprocess_dir))
  label_key = _label_key(preprocess_dir)
  tfrecord = data.make_dataset(
      files,
      spec,
      label_key,
      batch_size,
      training=True,
      shuffle_buffer=shuffle_buffer,
      seed=seed,
      cache=True)
  tensors = _in_memory(files, spec, label_key)
  in_memory = (
      tf.data.Dataset.from_tensor_slices(tensors).shuffle(
          shuffle_buffer, seed=seed,
          reshuffle_each_iteration=True).batch(batch_size).prefetch(
              tf.data.AUTOTUNE))
  return {
      'tfrecord': _time_epochs(tfrecord, epochs),
      'in_memory': _time_epochs(in_memory, epochs)
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description='examples/s of trainer.data.make_dataset against '
      'in-memory tensors of the same data')
  parser.add_argument('--preprocess-dir', required=True)
  parser.add_argument('--split', default='train')
  parser.add_argument(
      '--batch-size',
      type=int,
      default=256,
      help='default %(default)s (the trainer\'s default)')
  parser.add_argument('--epochs', type=int, default=3)
  parser.add_argument(
      '--repeat',
      type=int,
      default=3,
      help='measurements per dataset; the median is shown')
  parser.add_argument('--shuffle-buffer', type=int, default=10000)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)

  runs = [
      measure(args.preprocess_dir, args.split, args.batch_size, args.epochs,
              args.shuffle_buffer, args.seed) for _ in range(args.repeat)
  ]
  rows = []
  for epoch in range(args.epochs):
    rate = {
        kind: statistics.median(r[kind][epoch]['examples_per_s'] for r in runs)
        for kind in ('tfrecord', 'in_memory')
    }
    rows.append({
        'epoch': epoch + 1,
        'examples': runs[0]['tfrecord'][epoch]['examples'],
        'tfrecord_examples_per_s': round(rate['tfrecord']),
        'in_memory_examples_per_s': round(rate['in_memory']),
        'ratio': rate['tfrecord'] / rate['in_memory']
    })
  print(f'trainer input on {args.preprocess_dir} ({args.split}, batch '
        f'{args.batch_size}, shuffle buffer {args.shuffle_buffer}, '
        f'{os.cpu_count()} CPUs, median of {args.repeat})')
  print('| epoch | examples | make_dataset ex/s | in-memory ex/s | ratio |')
  print('|------:|---------:|------------------:|---------------:|------:|')
  for r in rows:
    note = ' (files)' if r['epoch'] == 1 else ' (cache)'
    print(f'| {r["epoch"]}{note} | {r["examples"]:,} | '
          f'{r["tfrecord_examples_per_s"]:,} | '
          f'{r["in_memory_examples_per_s"]:,} | {r["ratio"]:.0%} |')
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump({'args': vars(args), 'epochs': rows, 'runs': runs}, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
