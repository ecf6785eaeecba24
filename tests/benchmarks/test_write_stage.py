"""The write stage benchmark prints both encoders and both merges."""

import os

from benchmarks import write_stage


def test_prints_both_encoders_and_both_merges(adult_dir, capsys):
  write_stage.main([
      '--adult-data',
      os.path.join(adult_dir, 'adult.data'), '--rows', '300', '--repeat', '1',
      '--merge-records', '3000'
  ])
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split()[:2] == ['batch', 'rows']
  assert [line.split()[0] for line in lines[1:3]] == ['raw', 'transformed']
  for line in lines[1:3]:
    assert line.endswith('x') and float(line.split()[-1][:-1]) > 0
  assert lines[4].startswith('merge 3,000 records, 4 shards of 36 runs: ')
