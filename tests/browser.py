"""Headless Chromium for tests of the HTML reports a person opens.

Driven from the command line (`--dump-dom` prints the DOM after the page's
scripts ran): no Python package needed, only Debian's chromium. Without it a
browser test is skipped on a developer's machine, but fails under CI=true,
where .ci/run installs it: a report nobody rendered is not a tested report.
"""

import os
import shutil
import subprocess

import pytest

_CANDIDATES = ('chromium', 'chromium-browser', 'google-chrome')
# Flags for a root, offline, throw-away browser: no sandbox (root), no GPU,
# and none of the background connections a closed network refuses.
_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
          '--no-first-run', '--disable-background-networking',
          '--disable-component-update', '--disable-sync')


def chromium_path():
  for name in (os.environ.get('CHROMIUM', ''),) + _CANDIDATES:
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def require_chromium() -> str:
  """The browser's path; skips without one, or fails under CI=true."""
  path = chromium_path()
  if path is None:
    message = ('headless Chromium not found (Debian: apt-get install -y '
               'chromium, or set CHROMIUM=/path/to/chrome)')
    if os.environ.get('CI', '').lower() in ('1', 'true', 'yes'):
      pytest.fail(message + '; .ci/run installs it')
    pytest.skip(message)
  return path


def dump_dom(path, tmp_path) -> str:
  """The page's DOM after its scripts ran, from a fresh headless Chromium."""
  browser = require_chromium()
  profile = tmp_path / 'chromium-profile'
  profile.mkdir(exist_ok=True)
  cmd = [
      browser, *_FLAGS, f'--user-data-dir={profile}', '--dump-dom',
      'file://' + os.path.abspath(path)
  ]
  result = subprocess.run(
      cmd, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout
