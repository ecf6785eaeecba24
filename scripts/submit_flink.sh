#!/usr/bin/env bash
# Runs the preprocess job on Apache Flink.
#
#   scripts/submit_flink.sh --flink-master HOST:8081 --input ... --output-dir ...
#   scripts/submit_flink.sh --job-endpoint HOST:8099 ...   (a running Beam
#       Flink job server, e.g. the apache/beam_flink*_job_server image, or
#       the local cluster of `make flink-up`, which prints this command:
#       --job-endpoint localhost:8099 --flink-master localhost:8081
#       --environment-type EXTERNAL --environment-config localhost:50000)
#
# --flink-master alone uses Beam's FlinkRunner, which starts a Flink job
# server itself (it needs Java and fetches the job server jar once);
# --job-endpoint submits through the PortableRunner to a job server that is
# already up. With both, --flink-master is that cluster's REST address: a
# run stopped by Ctrl-C or SIGTERM cancels its Flink job there (the job
# server's own cancel leaves a running Flink batch job running).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<USAGE
Usage: $SCRIPT (--flink-master HOST:PORT | --job-endpoint HOST:PORT
       [--flink-master HOST:PORT]) [flags]
       [-- extra Beam options]

Runs python -m pipeline.preprocess on Flink (FlinkRunner or PortableRunner).

$COMMON_FLAGS_HELP

Flink (one of the first two, or both):
  --flink-master HOST:PORT  Flink REST address, or [local] for an embedded
                            cluster (FLINK_MASTER) -> FlinkRunner
  --job-endpoint HOST:PORT  a running Beam job server (JOB_ENDPOINT)
                            -> PortableRunner; with --flink-master too, a
                            stopped run cancels its job on that cluster
  --flink-version X.Y       Flink version of the cluster, FlinkRunner only
                            (FLINK_VERSION; default: Beam's newest)
  --parallelism N           Flink parallelism (PARALLELISM; optional)

$PORTABLE_FLAGS_HELP
USAGE
}

init_common
init_portable
FLINK_MASTER="${FLINK_MASTER:-}"
FLINK_VERSION="${FLINK_VERSION:-}"
PARALLELISM="${PARALLELISM:-}"

normalize_args "$@"
set -- "${ARGS[@]+"${ARGS[@]}"}"
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --flink-master) need_value "$@"; FLINK_MASTER="$2"; shift 2 ;;
    --flink-version) need_value "$@"; FLINK_VERSION="$2"; shift 2 ;;
    --parallelism) need_value "$@"; PARALLELISM="$2"; shift 2 ;;
    *)
      if parse_portable "$@" || parse_common "$@"; then
        shift "$SHIFT"
      else
        die "unknown flag '$1'"
      fi ;;
  esac
done

if [[ -z "$FLINK_MASTER" && -z "$JOB_ENDPOINT" ]]; then
  die "where to run is required: pass --flink-master HOST:PORT (or set \
FLINK_MASTER; '[local]' for an embedded Flink) or --job-endpoint HOST:PORT \
(or set JOB_ENDPOINT)"
fi
if [[ -n "$JOB_ENDPOINT" && "$FLINK_MASTER" == \[*\] ]]; then
  die "--flink-master $FLINK_MASTER starts a cluster of Beam's own; with \
--job-endpoint give the REST address (HOST:PORT) of the job server's cluster"
fi
build_common
if [[ -z "$JOB_ENDPOINT" ]]; then
  CMD+=(--runner=FlinkRunner "--flink_master=$FLINK_MASTER")
  [[ -n "$FLINK_VERSION" ]] && CMD+=("--flink_version=$FLINK_VERSION")
else
  [[ -n "$FLINK_VERSION" ]] &&
    die '--flink-version applies to --flink-master alone; the job server at \
--job-endpoint has its own'
  CMD+=(--runner=PortableRunner "--job_endpoint=$JOB_ENDPOINT")
  # Where a stopped run cancels its job (the job server submits there too).
  if [[ -n "$FLINK_MASTER" ]]; then
    CMD+=("--flink_master=$FLINK_MASTER")
  else
    warn "without --flink-master HOST:PORT (the cluster's REST address), a \
run stopped by Ctrl-C or SIGTERM can only ask the job server to cancel its \
job, and a running Flink batch job goes on"
  fi
fi
if [[ -n "$PARALLELISM" ]]; then
  require_int "$PARALLELISM" --parallelism 1
  CMD+=("--parallelism=$PARALLELISM")
fi
add_portable_options
finish
