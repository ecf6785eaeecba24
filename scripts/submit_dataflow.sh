#!/usr/bin/env bash
# Submits the preprocess job to Google Cloud Dataflow and waits for it.
#
#   scripts/submit_dataflow.sh --project P --region R \
#       --temp-location gs://BUCKET/tmp --input 'gs://BUCKET/raw/*.csv' \
#       --output-dir gs://BUCKET/preprocess [--dry-run]
#
# Workers install this repository from --setup_file ./setup.py (pipeline,
# trainer and schemas), so the job runs the same code as a local run. The
# launcher waits for the job: the manifest is written from its counts.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<USAGE
Usage: $SCRIPT [flags] [-- extra Beam options]

Runs python -m pipeline.preprocess on Dataflow (DataflowRunner).

$COMMON_FLAGS_HELP
  On Dataflow --input, --test-input and --output-dir must be gs:// paths.

Dataflow:
  --project ID            GCP project (PROJECT or GOOGLE_CLOUD_PROJECT)
  --region REGION         e.g. europe-west1 (REGION)
  --temp-location GCS     gs:// temporary files (TEMP_LOCATION)
  --staging-location GCS  gs:// staged packages (STAGING_LOCATION; default
                          TEMP_LOCATION/staging)
  --machine-type TYPE     worker machine type (MACHINE_TYPE; default
                          n1-standard-4)
  --max-workers N         autoscaling limit (MAX_NUM_WORKERS; default 10)
  --job-name NAME         (JOB_NAME; default preprocess-CONFIGNAME-UTCTIME)
  --service-account EMAIL worker service account (SERVICE_ACCOUNT; optional)
  --sdk-container-image IMAGE
                          prebuilt worker image (SDK_CONTAINER_IMAGE;
                          optional; speeds up worker start-up)
USAGE
}

init_common
PROJECT="${PROJECT:-${GOOGLE_CLOUD_PROJECT:-}}"
REGION="${REGION:-}"
TEMP_LOCATION="${TEMP_LOCATION:-}"
STAGING_LOCATION="${STAGING_LOCATION:-}"
MACHINE_TYPE="${MACHINE_TYPE:-n1-standard-4}"
MAX_NUM_WORKERS="${MAX_NUM_WORKERS:-10}"
JOB_NAME="${JOB_NAME:-}"
SERVICE_ACCOUNT="${SERVICE_ACCOUNT:-}"
SDK_CONTAINER_IMAGE="${SDK_CONTAINER_IMAGE:-}"

normalize_args "$@"
set -- "${ARGS[@]+"${ARGS[@]}"}"
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --project) need_value "$@"; PROJECT="$2"; shift 2 ;;
    --region) need_value "$@"; REGION="$2"; shift 2 ;;
    --temp-location) need_value "$@"; TEMP_LOCATION="$2"; shift 2 ;;
    --staging-location) need_value "$@"; STAGING_LOCATION="$2"; shift 2 ;;
    --machine-type) need_value "$@"; MACHINE_TYPE="$2"; shift 2 ;;
    --max-workers) need_value "$@"; MAX_NUM_WORKERS="$2"; shift 2 ;;
    --job-name) need_value "$@"; JOB_NAME="$2"; shift 2 ;;
    --service-account) need_value "$@"; SERVICE_ACCOUNT="$2"; shift 2 ;;
    --sdk-container-image) need_value "$@"; SDK_CONTAINER_IMAGE="$2"; shift 2 ;;
    *) parse_common "$@" || die "unknown flag '$1'"; shift "$SHIFT" ;;
  esac
done

require "$PROJECT" --project 'PROJECT (or GOOGLE_CLOUD_PROJECT)' 'the GCP project'
require "$REGION" --region REGION 'the Dataflow region'
require "$TEMP_LOCATION" --temp-location TEMP_LOCATION \
  'a gs:// temp location'
build_common
gcs_only() {
  # gcs_only VALUE FLAG: Dataflow workers cannot see this machine's disk.
  if [[ -n "$1" && "$1" != gs://* ]]; then
    die "$2 must be a gs:// path on Dataflow (workers cannot read this \
machine's files), got '$1'"
  fi
}
gcs_only "$INPUT" --input
gcs_only "$TEST_INPUT" --test-input
gcs_only "$OUTPUT_DIR" --output-dir
gcs_only "$TEMP_LOCATION" --temp-location
STAGING_LOCATION="${STAGING_LOCATION:-${TEMP_LOCATION%/}/staging}"
gcs_only "$STAGING_LOCATION" --staging-location
require_int "$MAX_NUM_WORKERS" --max-workers 1
if [[ -z "$JOB_NAME" ]]; then
  # Dataflow job names: lower-case letters, digits and '-', starting with a
  # letter.
  name="$(basename "$CONFIG")"
  name="${name%.*}"
  name="$(printf '%s' "$name" | tr 'A-Z_' 'a-z-' | tr -cd 'a-z0-9-')"
  JOB_NAME="preprocess-${name:-job}-$(date -u +%Y%m%d-%H%M%S)"
fi
if ! [[ "$JOB_NAME" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]]; then
  die "--job-name must be lower-case letters, digits and '-', starting with \
a letter; got '$JOB_NAME'"
fi

CMD+=(--runner=DataflowRunner
      "--project=$PROJECT"
      "--region=$REGION"
      "--temp_location=$TEMP_LOCATION"
      "--staging_location=$STAGING_LOCATION"
      "--job_name=$JOB_NAME"
      --setup_file=./setup.py
      "--machine_type=$MACHINE_TYPE"
      "--max_num_workers=$MAX_NUM_WORKERS")
[[ -n "$SERVICE_ACCOUNT" ]] && CMD+=("--service_account_email=$SERVICE_ACCOUNT")
[[ -n "$SDK_CONTAINER_IMAGE" ]] && CMD+=("--sdk_container_image=$SDK_CONTAINER_IMAGE")
finish
