#!/usr/bin/env bash
# Runs the preprocess job on this machine with Beam's DirectRunner.
#
#   scripts/run_local.sh [--input PATTERN --output-dir DIR] [--dry-run]
#       [--direct-num-workers N] [--direct-running-mode MODE] [-- BEAM_ARGS...]
#
# With no flags it preprocesses UCI Adult as `make data` leaves it
# (data/census/adult.data + adult.test -> out/preprocess).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<USAGE
Usage: $SCRIPT [flags] [-- extra Beam options]

Runs python -m pipeline.preprocess with the DirectRunner.

$COMMON_FLAGS_HELP
  Defaults here: --input data/census/adult.data, --test-input
  data/census/adult.test (only when --input is not given), --output-dir
  out/preprocess.

DirectRunner:
  --direct-num-workers N      parallel workers (DIRECT_NUM_WORKERS; default 1,
                              the in-process runner)
  --direct-running-mode MODE  in_memory | multi_threading | multi_processing
                              (DIRECT_RUNNING_MODE; default in_memory for one
                              worker, multi_processing for more; the job
                              refuses multi_threading with more than one)
USAGE
}

init_common
DIRECT_NUM_WORKERS="${DIRECT_NUM_WORKERS:-}"
DIRECT_RUNNING_MODE="${DIRECT_RUNNING_MODE:-}"

normalize_args "$@"
set -- "${ARGS[@]+"${ARGS[@]}"}"
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --direct-num-workers) need_value "$@"; DIRECT_NUM_WORKERS="$2"; shift 2 ;;
    --direct-running-mode) need_value "$@"; DIRECT_RUNNING_MODE="$2"; shift 2 ;;
    *) parse_common "$@" || die "unknown flag '$1'"; shift "$SHIFT" ;;
  esac
done

if [[ -z "$INPUT" ]]; then
  INPUT=data/census/adult.data
  TEST_INPUT="${TEST_INPUT:-data/census/adult.test}"
fi
OUTPUT_DIR="${OUTPUT_DIR:-out/preprocess}"

build_common
CMD+=(--runner=DirectRunner)
if [[ -n "$DIRECT_NUM_WORKERS" ]]; then
  require_int "$DIRECT_NUM_WORKERS" --direct-num-workers 1
  CMD+=("--direct_num_workers=$DIRECT_NUM_WORKERS")
  if [[ -z "$DIRECT_RUNNING_MODE" && "$DIRECT_NUM_WORKERS" -gt 1 ]]; then
    DIRECT_RUNNING_MODE=multi_processing
  fi
fi
if [[ -n "$DIRECT_RUNNING_MODE" ]]; then
  require_choice "$DIRECT_RUNNING_MODE" --direct-running-mode \
    in_memory multi_threading multi_processing
  CMD+=("--direct_running_mode=$DIRECT_RUNNING_MODE")
fi
finish
