#!/usr/bin/env bash
# Runs the preprocess job on Apache Spark.
#
#   scripts/submit_spark.sh --spark-master-url spark://HOST:7077 --input ... \
#       --output-dir ...
#   scripts/submit_spark.sh --spark-rest-url http://HOST:6066 ...  (uploads
#       one uber jar through Spark's REST API; no job server)
#   scripts/submit_spark.sh --job-endpoint HOST:8099 ...  (a running Beam
#       Spark job server, e.g. the apache/beam_spark3_job_server image, or
#       the local cluster of `make spark-up`, which prints this command)
#
# The first two use Beam's SparkRunner (it needs Java and fetches the job
# server jar once); --job-endpoint submits through the PortableRunner.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<USAGE
Usage: $SCRIPT (--spark-master-url URL | --spark-rest-url URL |
       --job-endpoint HOST:PORT) [flags] [-- extra Beam options]

Runs python -m pipeline.preprocess on Spark (SparkRunner or PortableRunner).

$COMMON_FLAGS_HELP

Spark (exactly one of):
  --spark-master-url URL    spark://HOST:PORT, or local[N] (SPARK_MASTER_URL)
                            -> SparkRunner with a Beam job server
  --spark-rest-url URL      http://HOST:6066 (SPARK_REST_URL) -> SparkRunner,
                            submitting an uber jar through Spark's REST API
  --job-endpoint HOST:PORT  a running Beam job server (JOB_ENDPOINT)
                            -> PortableRunner

$PORTABLE_FLAGS_HELP
USAGE
}

init_common
init_portable
SPARK_MASTER_URL="${SPARK_MASTER_URL:-}"
SPARK_REST_URL="${SPARK_REST_URL:-}"

normalize_args "$@"
set -- "${ARGS[@]+"${ARGS[@]}"}"
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --spark-master-url) need_value "$@"; SPARK_MASTER_URL="$2"; shift 2 ;;
    --spark-rest-url) need_value "$@"; SPARK_REST_URL="$2"; shift 2 ;;
    *)
      if parse_portable "$@" || parse_common "$@"; then
        shift "$SHIFT"
      else
        die "unknown flag '$1'"
      fi ;;
  esac
done

given=0
for v in "$SPARK_MASTER_URL" "$SPARK_REST_URL" "$JOB_ENDPOINT"; do
  [[ -n "$v" ]] && given=$((given + 1))
done
if ((given == 0)); then
  die "where to run is required: pass --spark-master-url spark://HOST:PORT \
(or set SPARK_MASTER_URL), --spark-rest-url http://HOST:6066 (or set \
SPARK_REST_URL) or --job-endpoint HOST:PORT (or set JOB_ENDPOINT)"
fi
if ((given > 1)); then
  die "--spark-master-url, --spark-rest-url and --job-endpoint exclude each \
other; give one"
fi
build_common
if [[ -n "$SPARK_MASTER_URL" ]]; then
  CMD+=(--runner=SparkRunner "--spark_master_url=$SPARK_MASTER_URL")
elif [[ -n "$SPARK_REST_URL" ]]; then
  CMD+=(--runner=SparkRunner --spark_submit_uber_jar
        "--spark_rest_url=$SPARK_REST_URL")
else
  CMD+=(--runner=PortableRunner "--job_endpoint=$JOB_ENDPOINT")
fi
add_portable_options
finish
