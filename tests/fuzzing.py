"""Hypothesis strategies for hostile input, and how long to run them.

`make test` runs each property with a modest number of examples (a few
seconds each); `make fuzz` sets FUZZ_SCALE to run them many times longer.
The example database is off, so a test run writes no files; a failure
prints the example that broke the property.
"""

import os
import string

from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

# How many times the default example counts to run (make fuzz: 50).
SCALE = max(1, int(os.environ.get('FUZZ_SCALE', '1')))


def fuzz_settings(examples: int, **kwargs) -> settings:
  """`examples` per property in `make test`, SCALE times that in make fuzz;
  no deadline (the machine may be busy), no example database."""
  return settings(
      max_examples=examples * SCALE,
      deadline=None,
      database=None,
      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
      **kwargs)


# --------------------------------------------------------------- numbers

# Integers around every boundary a column type has, and far beyond.
_EDGE_INTS = [
    0, -1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -2**63,
    -2**63 - 1, 10**20, -10**20, 10**300, 10**400
]
_EDGE_SPELLINGS = [
    'inf',
    '-inf',
    'Infinity',
    '-INFINITY',
    'nan',
    'NaN',
    '+nan',
    '1e309',
    '-1e309',
    '1e300',
    '4.9e-324',
    '2.2250738585072014e-308',
    '3.4028235e38',
    '3.4028236e38',
    '-3.5e38',
    '9223372036854775807',
    '9223372036854775808',
    '-9223372036854775808',
    '-9223372036854775809',
    '9.223372036854775807e18',
    '99999999999999999999',
    '1_000',
    '0x10',
    '0b11',
    '0o7',
    '１２',
    '١٢٣',
    '²',
    '+5',
    '-0',
    '.5',
    '5.',
    '00012',
    '1.5e18',
    '9.3e18',
    '1e-400',
    '253402300799',
    '253402300800',
    '-253402300800',
    '9' * 4301,
    '1' + '0' * 400,
    '1e',
    'e5',
    '--1',
    '+-1',
    '1.2.3',
    '',
    ' ',
    '?',
    'NA',
    '\u00a0',
    '\x00',
    '1\x00',
]
integers = st.one_of(st.integers(), st.integers(-2**70, 2**70),
                     st.sampled_from(_EDGE_INTS))
spelled_numbers = st.one_of(
    integers.map(str),
    st.floats().map(repr),
    st.floats().map(lambda f: f'{f:e}'),
    st.floats(width=32).map(str),
    st.builds(lambda m, e: f'{m}e{e}', st.integers(-10**6, 10**6),
              st.integers(-500, 500)),
    st.builds(lambda a, b: f'{a}.{b}', st.integers(-10**25, 10**25),
              st.integers(0, 10**12)),
    st.sampled_from(_EDGE_SPELLINGS),
    st.text(alphabet='0123456789.eE+-_ xXbo', max_size=40),
)

# Timestamps: ISO-8601 at and beyond the years a date holds, epoch seconds.
timestamps = st.one_of(
    spelled_numbers,
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from([
        '0001-01-01', '9999-12-31T23:59:59Z', '9999-12-31T23:59:59-01:00',
        '0001-01-01T00:00:00+01:00', '2024-02-30', '2024-13-01',
        '2024-05-01T25:00:00', '2024-05-01T13:45:10.123456789Z', 'Z', '+00:00'
    ]))

# ----------------------------------------------------------------- text

any_text = st.text(max_size=40)
field_text = st.one_of(
    any_text,
    st.text(alphabet=string.printable, max_size=40),
    st.sampled_from([
        '"', '""', '"a,b"', '"unclosed', 'x"y', ',', '|', '||', '#comment', '?',
        'NA', '\ufeff', '\r', '\n', '\t', '\ud7ff', '\U0001f600', 'yes', 'no',
        'true', 'red', '<=50K', '>50K.', 'Male'
    ]),
)
json_scalars = st.one_of(st.none(), st.booleans(), integers, st.floats(),
                         st.text(max_size=30),
                         st.sampled_from(['', '12', 'NaN', 'yes', '1e999']))
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4)),
    max_leaves=12)
