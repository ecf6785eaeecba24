"""The encoding benchmark runs on Adult rows and prints both timings."""

import os

from benchmarks import example_encoding


def test_prints_both_encoders_for_raw_and_transformed_batches(
    adult_dir, capsys):
  example_encoding.main([
      '--adult-data',
      os.path.join(adult_dir, 'adult.data'), '--rows', '300', '--repeat', '1'
  ])
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split()[:2] == ['batch', 'rows']
  assert [line.split()[0] for line in lines[1:]] == ['raw', 'transformed']
  for line in lines[1:]:
    assert line.endswith('x') and float(line.split()[-1][:-1]) > 0
