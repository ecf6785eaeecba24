"""The profile's stage table: stage names and the folding of small stages."""

from benchmarks import profile


def test_stage_label_is_the_first_applied_transform():
  name = ('((((ref_PCollection_PCollection_14/Read)+(ref_AppliedPTransform_'
          'Split-AssignSplit-ParDo-_AssignSplitFn-_40))+(ref_AppliedPTransform'
          '_Statistics-train-GenerateStatistics_41))')
  assert profile.stage_label(name) == 'Split/AssignSplit/ParDo'


def test_stage_label_without_an_applied_transform_uses_the_first_name():
  assert profile.stage_label(
      '(Statistics[train]/GenerateStatistics/RunStatsGenerators/Flatten/Read)'
  ) == 'Statistics[train]/GenerateStatistics/RunStatsGenerators'


def _run(**stages):
  seconds = {'run_pipeline': 10.0}
  calls = {'run_pipeline': 1}
  for name, value in stages.items():
    seconds[profile.STAGE_PREFIX + name] = value
    calls[profile.STAGE_PREFIX + name] = 2
  return {'seconds': seconds, 'calls': calls, 'stderr_lines': 0}


def test_small_stages_fold_into_one_row_and_the_totals_reconcile():
  runs = {
      'before': [
          _run(big=2.0, small=0.1, tiny=0.2),
          _run(big=2.2, small=0.1, tiny=0.3)
      ],
      # 'slow' is small in the first tree only: it keeps its own row.
      'after': [
          _run(big=1.0, small=0.1, slow=0.9),
          _run(big=1.2, small=0.2, slow=0.7)
      ],
  }
  folded = profile.fold_small_stages(runs)
  others = profile.STAGE_PREFIX + 'all other stages'
  for label, label_runs in runs.items():
    for run, new in zip(label_runs, folded[label]):
      kept = {n for n in new['seconds'] if n.startswith(profile.STAGE_PREFIX)}
      assert profile.STAGE_PREFIX + 'small' not in kept
      assert profile.STAGE_PREFIX + 'big' in kept
      total = sum(v for n, v in run['seconds'].items()
                  if n.startswith(profile.STAGE_PREFIX))
      assert abs(sum(new['seconds'][n] for n in kept) - total) < 1e-9
      assert new['seconds']['run_pipeline'] == 10.0
  assert profile.STAGE_PREFIX + 'slow' in folded['after'][0]['seconds']
  assert folded['before'][0]['seconds'][others] == 0.1 + 0.2
  assert folded['before'][0]['calls'][others] == 4
  table = profile._table('preprocess', runs)  # pylint: disable=protected-access
  rows = [line.split('  ')[0] for line in table.splitlines()]
  assert rows.index(profile.STAGE_PREFIX + 'big') < rows.index(others)
