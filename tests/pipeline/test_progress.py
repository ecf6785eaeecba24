"""While the preprocess command works, a line every few seconds says what."""

import io
import logging
import time

import pytest

from pipeline import preprocess
from pipeline import progress
from tests.conftest import TOY_CONFIG


def _beam_starts_bundle(stage_name: str) -> None:
  # What Beam 2.61's FnApiRunner logs before it runs a bundle.
  logging.getLogger(progress.BUNDLE_LOGGER).debug(
      'Running bundle for stage %s\n\tExpected outputs: %s timers: %s',
      stage_name, {}, {})


def _wait_for(out: io.StringIO, text: str, timeout_s: float = 10) -> str:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    lines = out.getvalue().splitlines()
    if lines and text in lines[-1]:
      return lines[-1]
    time.sleep(0.02)
  raise AssertionError(f'no line with {text!r}: {out.getvalue()!r}')


@pytest.mark.parametrize('stage, step', [
    ('(((ref_AppliedPTransform_IngestInput-Read-ListFiles-Impulse_5)+'
     '(ref_AppliedPTransform_IngestInput-Read-ListFiles-FlatMap-lambda-at-'
     'core-py-3978-_6))', 'IngestInput/Read'),
    ('((ref_PCollection_PCollection_755/Read)+(ref_AppliedPTransform_'
     'AnalyzeAndTransform-AnalyzeTrain-VocabularyOrderAndWrite-native_country'
     '-vocabu_1337))+(ref_PCollection_PCollection_762/Write)',
     'AnalyzeAndTransform/AnalyzeTrain'),
    ('ref_AppliedPTransform_Write_12', 'Write'),
    ('ref_PCollection_PCollection_1/Read', None),
])
def test_a_stage_is_shown_by_the_jobs_labels(stage, step):
  assert progress.step_of(stage) == step


class _Records(logging.Handler):

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.records = []

  def emit(self, record):
    self.records.append(record)


@pytest.fixture
def root_records():
  # A handler on the root logger that takes every level, as a user's log
  # file might; the root logger's own level stays as it is.
  handler = _Records()
  logging.getLogger().addHandler(handler)
  yield handler.records
  logging.getLogger().removeHandler(handler)


def test_lines_say_the_phase_and_the_runners_stage(root_records):
  out = io.StringIO()
  logger = logging.getLogger(progress.BUNDLE_LOGGER)
  before = (logger.level, logger.propagate)
  with progress.Progress('job', 0.05, out=out) as shown:
    shown.phase('building')
    assert _wait_for(out, 'building').startswith('job: ')
    shown.phase('running')
    _beam_starts_bundle('(ref_AppliedPTransform_Split-AssignSplit-ParDo_23)')
    _beam_starts_bundle('(ref_AppliedPTransform_Split-AssignSplit-ParDo_23)')
    _beam_starts_bundle('(ref_AppliedPTransform_Write-Encode_40)')
    line = _wait_for(out, 'now Write')
    assert line.endswith('running: 2 stages started, now Write/Encode')
  # The runner's records went to the line, not to the log (which a user
  # had not asked to show them), and the logger is as it was.
  assert not any(r.name == progress.BUNDLE_LOGGER for r in root_records)
  assert (logger.level, logger.propagate) == before
  printed = out.getvalue()
  time.sleep(0.2)
  assert out.getvalue() == printed  # nothing after the work ended


def test_nothing_is_printed_for_work_shorter_than_the_period():
  out = io.StringIO()
  with progress.Progress('job', 5, out=out) as shown:
    shown.phase('quick')
  assert out.getvalue() == ''
  with progress.Progress('job', 0, out=out):
    time.sleep(0.1)
  assert out.getvalue() == ''


def test_a_negative_period_is_refused(capsys, tmp_path):
  with pytest.raises(SystemExit) as exited:
    preprocess.main([
        '--config', TOY_CONFIG, '--input', TOY_CONFIG, '--output-dir',
        str(tmp_path / 'out'), '--progress-seconds', '-1'
    ])
  assert exited.value.code == 2
  assert '--progress-seconds must be 0 or more' in capsys.readouterr().err


# An exception in the line's thread would be reported as this warning.
@pytest.mark.filterwarnings(
    'error::pytest.PytestUnhandledThreadExceptionWarning')
def test_a_closed_output_stops_the_lines_not_the_work():
  out = io.StringIO()
  with progress.Progress('job', 0.02, out=out) as shown:
    _wait_for(out, 'starting')
    out.close()  # as a pipe whose reader has gone
    time.sleep(0.1)
    shown.phase('still working')
  assert out.closed
