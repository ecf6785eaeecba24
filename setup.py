"""Packages pipeline/, trainer/, serving/ and schemas/ so that Beam workers get
them.

Dataflow, Flink and Spark workers install this package from --setup_file, so
everything a worker imports (and the dataset configs it reads) must be here.
"""

import setuptools

REQUIRED = [
    'apache-beam[gcp]==2.61.0',
    'tensorflow==2.16.2',
    'tensorflow-transform==1.16.0',
    'tensorflow-data-validation==1.16.1',
    'tfx-bsl==1.16.1',
    'tensorflow-metadata==1.16.1',
    'tf-keras==2.16.0',
    'pyarrow==10.0.1',
    'PyYAML>=6.0',
    'matplotlib==3.11.2',  # trainer/report.py (Agg backend, PNGs)
    'aiohttp==3.14.5',
]

setuptools.setup(
    name='tabular-wide-deep',
    version='0.1.0',
    description='Apache Beam + tf.Transform preprocessing, wide & deep '
    'training and serving for tabular data',
    packages=['pipeline', 'trainer', 'serving', 'schemas'],
    package_data={'schemas': ['*.yaml', '*.pbtxt']},
    include_package_data=True,
    python_requires='>=3.9,<3.12',
    install_requires=REQUIRED,
    extras_require={'test': ['pytest', 'hypothesis==6.170.15']},
)
