"""Benchmarks: scripts that print figures, run by hand or by `make bench-*`
on an otherwise idle machine (`python -m benchmarks.<name>` from the
repository root); they are not tests.

TensorFlow's and TFDV's C++ start-up notes are silenced here, before any
benchmark imports them.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('GLOG_minloglevel', '2')
