# Shared by run_local.sh and submit_*.sh; sourced, never run on its own.
#
# Each script turns its flags (or environment variables) into one
# `python -m pipeline.preprocess ...` command line. Keeping the parsing, the
# quoting and the --dry-run printing here means every script prints its command
# the same way, and what --dry-run prints is exactly what a real run executes.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CALLER_PWD="$(pwd)"
SCRIPT="$(basename "$0")"

die() {
  echo "$SCRIPT: error: $*" >&2
  echo "Run '$SCRIPT --help' for the flags and environment variables." >&2
  exit 2
}

warn() {
  echo "$SCRIPT: warning: $*" >&2
}

# Splits --flag=value into --flag value so that the scripts' case statements
# only handle one form. Everything after a bare `--` is kept verbatim: those are
# extra Beam pipeline options. Result in the ARGS array.
normalize_args() {
  ARGS=()
  while (($#)); do
    case "$1" in
      --) ARGS+=("$@"); return ;;
      --*=*) ARGS+=("${1%%=*}" "${1#*=}") ;;
      *) ARGS+=("$1") ;;
    esac
    shift
  done
}

# need_value FLAG NEXT...: fails unless FLAG is followed by a value.
need_value() {
  if (($# < 2)); then
    die "$1 needs a value"
  fi
}

is_remote() {
  [[ "$1" == *://* ]]
}

# Relative local paths are relative to where the script was started; the
# command itself runs from the repository root (so `python -m pipeline...`
# and `--setup_file ./setup.py` resolve), hence the rewrite when the two differ.
from_caller() {
  local path="$1"
  if [[ -z "$path" ]] || is_remote "$path" || [[ "$path" == /* ]] ||
      [[ "$CALLER_PWD" == "$ROOT" ]]; then
    printf '%s' "$path"
  else
    printf '%s' "$CALLER_PWD/$path"
  fi
}

require() {
  # require VALUE FLAG ENV_VAR WHAT
  if [[ -z "$1" ]]; then
    die "$4 is required: pass $2 or set $3"
  fi
}

require_int() {
  # require_int VALUE FLAG MINIMUM
  if ! [[ "$1" =~ ^[0-9]+$ ]] || (( $1 < $3 )); then
    die "$2 must be an integer >= $3, got '$1'"
  fi
}

require_choice() {
  # require_choice VALUE FLAG CHOICE...
  local value="$1" flag="$2"
  shift 2
  local c
  for c in "$@"; do
    [[ "$value" == "$c" ]] && return 0
  done
  die "$flag must be one of: $*; got '$value'"
}

# ---------------------------------------------------------------- common flags

COMMON_FLAGS_HELP="\
Data and output (flag, or environment variable):
  --config PATH        dataset config (CONFIG; default schemas/census.yaml)
  --input PATTERN      train/eval input files (INPUT)
  --test-input PATTERN held-out test files (TEST_INPUT; optional)
  --output-dir DIR     output directory (OUTPUT_DIR)
  --num-shards N       TFRecord shards per split (NUM_SHARDS; default 4)
  --overwrite          replace an existing output directory (OVERWRITE=1)
  --write-raw          also write the cleansed raw rows (WRITE_RAW=1)
  --progress-seconds N a progress line every N seconds (PROGRESS_SECONDS;
                       default 10; 0: none)
  --python PATH        interpreter (PYTHON; default .venv/bin/python if it
                       exists, else python3)
  --dry-run            print the command and its options; run nothing
  -- ARGS...           anything after -- is passed on as Beam pipeline options"

# Paths given by flag or environment variable are taken relative to the
# caller's directory (from_caller); defaults are relative to the repository.
init_common() {
  CONFIG="$(from_caller "${CONFIG:-}")"
  CONFIG="${CONFIG:-schemas/census.yaml}"
  INPUT="$(from_caller "${INPUT:-}")"
  TEST_INPUT="$(from_caller "${TEST_INPUT:-}")"
  OUTPUT_DIR="$(from_caller "${OUTPUT_DIR:-}")"
  NUM_SHARDS="${NUM_SHARDS:-}"
  OVERWRITE="${OVERWRITE:-}"
  WRITE_RAW="${WRITE_RAW:-}"
  PROGRESS_SECONDS="${PROGRESS_SECONDS:-}"
  PYTHON="${PYTHON:-}"
  DRY_RUN=""
  EXTRA_ARGS=()
}

# parse_common "$@": handles one common flag; sets SHIFT to the number of
# arguments it consumed, or returns 1 when the flag is not a common one.
parse_common() {
  SHIFT=2
  case "$1" in
    --config) need_value "$@"; CONFIG="$(from_caller "$2")" ;;
    --input) need_value "$@"; INPUT="$(from_caller "$2")" ;;
    --test-input) need_value "$@"; TEST_INPUT="$(from_caller "$2")" ;;
    --output-dir) need_value "$@"; OUTPUT_DIR="$(from_caller "$2")" ;;
    --num-shards) need_value "$@"; NUM_SHARDS="$2" ;;
    --progress-seconds) need_value "$@"; PROGRESS_SECONDS="$2" ;;
    --python) need_value "$@"; PYTHON="$2" ;;
    --overwrite) OVERWRITE=1; SHIFT=1 ;;
    --write-raw) WRITE_RAW=1; SHIFT=1 ;;
    --dry-run) DRY_RUN=1; SHIFT=1 ;;
    --) shift; EXTRA_ARGS=("$@"); SHIFT=$(($# + 1)) ;;
    *) return 1 ;;
  esac
  return 0
}

# Builds CMD: the interpreter, the module and the data flags; the caller
# appends its runner options with `CMD+=(...)` and then calls finish.
build_common() {
  require "$INPUT" --input INPUT 'the input'
  require "$OUTPUT_DIR" --output-dir OUTPUT_DIR 'the output directory'
  if [[ -n "$NUM_SHARDS" ]]; then
    require_int "$NUM_SHARDS" --num-shards 1
  fi
  if [[ -z "$PYTHON" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then
      PYTHON=.venv/bin/python
    else
      PYTHON=python3
    fi
  fi
  CMD=("$PYTHON" -m pipeline.preprocess "--config=$CONFIG" "--input=$INPUT")
  [[ -n "$TEST_INPUT" ]] && CMD+=("--test-input=$TEST_INPUT")
  CMD+=("--output-dir=$OUTPUT_DIR")
  [[ -n "$NUM_SHARDS" ]] && CMD+=("--num-shards=$NUM_SHARDS")
  [[ -n "$OVERWRITE" && "$OVERWRITE" != 0 ]] && CMD+=(--overwrite)
  [[ -n "$WRITE_RAW" && "$WRITE_RAW" != 0 ]] && CMD+=(--write-raw)
  [[ -n "$PROGRESS_SECONDS" ]] &&
    CMD+=("--progress-seconds=$PROGRESS_SECONDS")
  return 0
}

# Shell-quotes one word only when it needs it, so the printed command stays
# readable and can be pasted back into a shell unchanged.
quote() {
  local word="$1" prefix=''
  if [[ "$word" =~ ^(--[A-Za-z0-9_-]+=)(.*)$ ]]; then
    prefix="${BASH_REMATCH[1]}"
    word="${BASH_REMATCH[2]}"
  fi
  if [[ "$word" =~ ^[A-Za-z0-9_./:=@%+,^-]*$ ]]; then
    printf '%s%s' "$prefix" "$word"
  else
    printf "%s'%s'" "$prefix" "${word//\'/\'\\\'\'}"
  fi
}

print_command() {
  echo "# working directory: $ROOT"
  local i last=$((${#CMD[@]} - 1))
  printf '%s %s %s' "$(quote "${CMD[0]}")" "${CMD[1]}" "${CMD[2]}"
  for ((i = 3; i <= last; i++)); do
    printf ' \\\n  %s' "$(quote "${CMD[i]}")"
  done
  printf '\n'
}

# Prints the command (stdout for --dry-run, stderr otherwise) and runs it
# unless this is a dry run.
finish() {
  CMD+=("${EXTRA_ARGS[@]}")
  if [[ -n "$DRY_RUN" ]]; then
    echo "# $SCRIPT --dry-run: nothing is submitted; the command would be:"
    print_command
    exit 0
  fi
  print_command >&2
  cd "$ROOT"
  exec "${CMD[@]}"
}

# ------------------------------------------------------- portable runners

PORTABLE_FLAGS_HELP="\
SDK workers (Flink and Spark):
  --environment-type TYPE   DOCKER | PROCESS | EXTERNAL | LOOPBACK
                            (ENVIRONMENT_TYPE; default DOCKER)
  --environment-config CFG  DOCKER: image (default: Beam's Python SDK image);
                            PROCESS: JSON with the boot command; EXTERNAL:
                            worker pool HOST:PORT (ENVIRONMENT_CONFIG; required
                            for PROCESS and EXTERNAL)
  --sdk-worker-parallelism N SDK worker processes per runner worker
                            (SDK_WORKER_PARALLELISM; optional)
  --environment-cache-ms MS keep an idle SDK worker this long for the job's
                            next stage instead of starting a new one
                            (ENVIRONMENT_CACHE_MILLIS; default 60000; not for
                            LOOPBACK)"

init_portable() {
  JOB_ENDPOINT="${JOB_ENDPOINT:-}"
  ENVIRONMENT_TYPE="${ENVIRONMENT_TYPE:-DOCKER}"
  ENVIRONMENT_CONFIG="${ENVIRONMENT_CONFIG:-}"
  SDK_WORKER_PARALLELISM="${SDK_WORKER_PARALLELISM:-}"
  ENVIRONMENT_CACHE_MILLIS="${ENVIRONMENT_CACHE_MILLIS:-}"
}

parse_portable() {
  SHIFT=2
  case "$1" in
    --job-endpoint) need_value "$@"; JOB_ENDPOINT="$2" ;;
    --environment-type) need_value "$@"; ENVIRONMENT_TYPE="$2" ;;
    --environment-config) need_value "$@"; ENVIRONMENT_CONFIG="$2" ;;
    --sdk-worker-parallelism) need_value "$@"; SDK_WORKER_PARALLELISM="$2" ;;
    --environment-cache-ms) need_value "$@"; ENVIRONMENT_CACHE_MILLIS="$2" ;;
    *) return 1 ;;
  esac
  return 0
}

# Appends the SDK environment options. Unless user code runs in the launching
# process (LOOPBACK), workers get the code from --setup_file ./setup.py, and
# local paths only work when every worker sees the same filesystem.
add_portable_options() {
  ENVIRONMENT_TYPE="$(printf '%s' "$ENVIRONMENT_TYPE" | tr a-z A-Z)"
  require_choice "$ENVIRONMENT_TYPE" --environment-type \
    DOCKER PROCESS EXTERNAL LOOPBACK
  case "$ENVIRONMENT_TYPE" in
    PROCESS|EXTERNAL)
      require "$ENVIRONMENT_CONFIG" --environment-config ENVIRONMENT_CONFIG \
        "--environment-type $ENVIRONMENT_TYPE: the environment config" ;;
    LOOPBACK)
      [[ -n "$ENVIRONMENT_CONFIG" ]] &&
        die '--environment-config does not apply to --environment-type LOOPBACK'
      ;;
  esac
  CMD+=("--environment_type=$ENVIRONMENT_TYPE")
  [[ -n "$ENVIRONMENT_CONFIG" ]] &&
    CMD+=("--environment_config=$ENVIRONMENT_CONFIG")
  if [[ -n "$SDK_WORKER_PARALLELISM" ]]; then
    require_int "$SDK_WORKER_PARALLELISM" --sdk-worker-parallelism 1
    CMD+=("--sdk_worker_parallelism=$SDK_WORKER_PARALLELISM")
  fi
  if [[ "$ENVIRONMENT_TYPE" == LOOPBACK ]]; then
    [[ -n "$ENVIRONMENT_CACHE_MILLIS" ]] && die "--environment-cache-ms does \
not apply to --environment-type LOOPBACK"
  else
    # A Python SDK worker takes seconds to start (it imports TensorFlow): keep
    # it for the next stage of the job rather than start one per stage.
    require_int "${ENVIRONMENT_CACHE_MILLIS:-60000}" --environment-cache-ms 0
    CMD+=("--environment_cache_millis=${ENVIRONMENT_CACHE_MILLIS:-60000}")
    CMD+=(--setup_file=./setup.py)
    local flag value
    for flag in --input --test-input --output-dir; do
      case "$flag" in
        --input) value="$INPUT" ;;
        --test-input) value="$TEST_INPUT" ;;
        --output-dir) value="$OUTPUT_DIR" ;;
      esac
      if [[ -n "$value" ]] && ! is_remote "$value"; then
        warn "$flag $value is a local path: every worker must see it at the \
same path (use gs://, hdfs://, s3:// ... on a cluster)"
      fi
    done
  fi
  return 0
}
