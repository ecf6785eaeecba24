"""A line every few seconds while the preprocess command works.

Building the Adult job's graph takes seconds and running it tens of seconds
(minutes for millions of rows), with nothing to show until it ends. So the
command prints, every `period_s` seconds while it is still busy, how long it
has been working and what it is doing: building the job's graph, running
the job, checking the output.

While the job runs, Beam's DirectRunner (in-process or with worker
processes) logs each bundle it starts, with its fused stage's name, at
DEBUG level on its `run_bundle` logger. Those records come here while the
job runs (and, unless that logger was already set to show them, only
here), so the line also says how many of the runner's stages have started
and which step of the job (the labels of `build_pipeline`, such as
AnalyzeAndTransform/AnalyzeTrain) the latest one belongs to. Other runners
show their progress in their own UI; the line then says whether the job is
being submitted or running, and for how long.
"""

import logging
import re
import sys
import threading
import time
from typing import Callable, Optional, Set, TextIO

# Beam 2.61's FnApiRunner: _BUNDLE_LOGGER in fn_api_runner/fn_runner.py.
BUNDLE_LOGGER = 'apache_beam.runners.portability.fn_api_runner.fn_runner.run_bundle'
_RUNNING_BUNDLE = 'Running bundle for stage'
# A fused stage is named after its transforms, "ref_AppliedPTransform_" and
# the label path with '/' written '-', then a number.
_TRANSFORM = re.compile(r'ref_AppliedPTransform_([\w\[\]-]+?)_\d+\)')


def step_of(stage_name: str) -> Optional[str]:
  """'AnalyzeAndTransform/AnalyzeTrain' for a stage whose first transform
  is under that label; None for a stage without one."""
  found = _TRANSFORM.search(stage_name + ')')
  if found is None:
    return None
  return '/'.join(part for part in found.group(1).split('-')[:2] if part)


class _BundleHandler(logging.Handler):

  def __init__(self, on_stage: Callable[[str], None]):
    super().__init__(logging.DEBUG)
    self._on_stage = on_stage

  def emit(self, record: logging.LogRecord) -> None:
    if str(record.msg).startswith(_RUNNING_BUNDLE) and record.args:
      args = record.args if isinstance(record.args, tuple) else (record.args,)
      self._on_stage(str(args[0]))


class Progress:
  """Prints '<command>: <seconds> s, <what>' every period_s seconds.

  A context manager; `phase()` says what the command is doing now. Nothing
  is printed for work that ends within the first period.
  """

  def __init__(self,
               command: str,
               period_s: float,
               out: Optional[TextIO] = None,
               clock: Callable[[], float] = time.monotonic):
    self._command = command
    self._period_s = period_s
    self._out = out
    self._clock = clock
    self._start = clock()
    self._phase = 'starting'
    self._stages: Set[str] = set()
    self._step: Optional[str] = None
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._handler = _BundleHandler(self._on_stage)
    self._logger = logging.getLogger(BUNDLE_LOGGER)
    self._saved = (self._logger.level, self._logger.propagate)

  def phase(self, what: str) -> None:
    self._phase = what

  def _on_stage(self, stage_name: str) -> None:
    self._stages.add(stage_name)
    self._step = step_of(stage_name) or self._step

  def line(self) -> str:
    seconds = self._clock() - self._start
    text = f'{self._command}: {seconds:.0f} s, {self._phase}'
    if self._stages:
      started = len(self._stages)
      text += f': {started} stage{"s" if started > 1 else ""} started'
      if self._step:
        text += f', now {self._step}'
    return text

  def _run(self) -> None:
    while not self._stop.wait(self._period_s):
      try:
        print(self.line(), file=self._out or sys.stdout, flush=True)
      except (OSError, ValueError):
        return  # stdout closed (a pipe's reader gone): the job goes on

  def __enter__(self) -> 'Progress':
    if self._period_s <= 0:
      return self
    if not self._logger.isEnabledFor(logging.DEBUG):
      # Shown here only: the records would otherwise reach the root
      # logger's handlers too.
      self._logger.setLevel(logging.DEBUG)
      self._logger.propagate = False
    self._logger.addHandler(self._handler)
    self._thread = threading.Thread(
        target=self._run, name=f'{self._command}-progress', daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc_info) -> None:
    if self._thread is None:
      return
    self._stop.set()
    self._thread.join()
    self._logger.removeHandler(self._handler)
    self._logger.setLevel(self._saved[0])
    self._logger.propagate = self._saved[1]
