#!/usr/bin/env bash
# A local standalone Apache Flink cluster for the preprocess job.
#
#   scripts/engines/flink.sh up      # make flink-up
#   scripts/engines/flink.sh down    # make flink-down
#   scripts/engines/flink.sh status
#
# `up` starts, as separate processes: a Flink JobManager and TaskManager(s)
# from a real Flink distribution (Flink 1.19, from PyPI's apache-flink and
# apache-flink-libraries source distributions, used as a distribution only),
# Beam's Flink job server (resolved from Maven Central) and Beam's SDK worker
# pool (EXTERNAL environment), then prints the scripts/submit_flink.sh
# command that targets them. It is idempotent: what is already running is
# kept, what died is started again. `down` stops every process `up` started,
# by the PIDs it recorded.
#
# Ports (environment): FLINK_REST_PORT (8081), FLINK_RPC_PORT (6123),
# JOB_SERVER_PORT (8099), WORKER_POOL_PORT (50000); a taken port is replaced
# by a free one and the printed command says so. FLINK_TASKMANAGERS (1) and
# FLINK_SLOTS (2 per TaskManager) size the cluster, FLINK_TASKMANAGER_MEMORY
# (3072m) each TaskManager; FLINK_ASK_TIMEOUT (120 s) is how long Flink's
# processes wait for each other's answers. See lib.sh for the cache, state
# and log folders.
set -euo pipefail
SCRIPT="flink.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FLINK_REQUIREMENTS="$ENGINES_DIR/flink-dist.txt"
FLINK_POM="$ENGINES_DIR/flink-job-server.pom.xml"
FLINK_VERSION="$(sdist_version "$FLINK_REQUIREMENTS" apache-flink)"
BEAM_JAVA_VERSION="$(sed -n 's:.*<beam.version>\(.*\)</beam.version>.*:\1:p' \
  "$FLINK_POM")"

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

# The Flink home: both sdists' deps/ folders merged, unpacked once.
ensure_flink_home() {
  FLINK_HOME="$CACHE/dist/flink-$FLINK_VERSION"
  [[ -f "$FLINK_HOME/.complete" ]] && return 0
  local downloads="$CACHE/downloads" name file tmp
  for name in apache-flink apache-flink-libraries; do
    file="$downloads/$name-$FLINK_VERSION.tar.gz"
    if [[ ! -f "$file" ]]; then
      fetch_pypi_dist "$FLINK_REQUIREMENTS" "$downloads"
    fi
    verify_sha256 "$file" "$(sdist_hash "$FLINK_REQUIREMENTS" "$name")"
  done
  say "unpacking Flink $FLINK_VERSION into $FLINK_HOME"
  tmp="$FLINK_HOME.partial"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  for name in apache-flink apache-flink-libraries; do
    tar -xzf "$downloads/$name-$FLINK_VERSION.tar.gz" -C "$tmp" \
      --strip-components=2 "$name-$FLINK_VERSION/deps"
  done
  [[ -x "$tmp/bin/jobmanager.sh" ]] && ls "$tmp"/lib/flink-dist-*.jar \
      >/dev/null 2>&1 || die "the Flink sdists did not unpack into a Flink \
home (no bin/jobmanager.sh or lib/flink-dist-*.jar in $tmp)"
  touch "$tmp/.complete"
  rm -rf "$FLINK_HOME"
  mv "$tmp" "$FLINK_HOME"
}

ensure_job_server() {
  JOB_SERVER_LIB="$CACHE/dist/beam-flink-job-server-$BEAM_JAVA_VERSION-\
flink-$FLINK_VERSION"
  if [[ ! -f "$JOB_SERVER_LIB/beam-runners-flink-1.19-$BEAM_JAVA_VERSION.jar" \
      ]]; then
    resolve_maven "$FLINK_POM" "$JOB_SERVER_LIB"
  fi
}

# The JobManager's and TaskManagers' lib/: the distribution's jars plus Beam's
# runner and its dependencies (not Flink's own, nor a second logging or Kryo
# stack). Loaded parent-first, Beam's classes outlive a job's tasks on the
# TaskManager, so its SDK workers are kept between stages
# (--environment_cache_millis) instead of being started again for each.
write_flink_lib() {
  local lib="$STATE/lib" jar
  rm -rf "$lib"
  mkdir -p "$lib"
  ln -s "$FLINK_HOME"/lib/*.jar "$lib/"
  for jar in "$JOB_SERVER_LIB"/*.jar; do
    case "$(basename "$jar")" in
      flink-*|slf4j-*|log4j-*|kryo-*|minlog-*|objenesis-*|chill-*) ;;
      *) ln -s "$jar" "$lib/" ;;
    esac
  done
}

write_flink_conf() {
  local conf="$STATE/conf" java_opts
  mkdir -p "$conf" "$STATE/pids" "$STATE/tmp"
  cp "$FLINK_HOME/conf/log4j-console.properties" \
    "$FLINK_HOME/conf/log4j-cli.properties" "$conf/"
  # The distribution's JVM flags for Java 17 (module opens and exports), and
  # the cluster's own folder for the files Java libraries unpack (native
  # codecs), which would otherwise be left in the system's /tmp.
  java_opts="$(sed -n 's/^ *all: *//p' "$FLINK_HOME/conf/config.yaml" |
    head -n 1) -Djava.io.tmpdir=$STATE/tmp"
  cat >"$conf/config.yaml" <<CONF
# Written by scripts/engines/flink.sh up; one standalone cluster on localhost.
env.java.opts.all: $java_opts
env.pid.dir: $STATE/pids
env.log.dir: $LOGS
io.tmp.dirs: $STATE/tmp
jobmanager.bind-host: localhost
jobmanager.rpc.address: localhost
jobmanager.rpc.port: $FLINK_RPC_PORT
jobmanager.memory.process.size: 1024m
jobmanager.execution.failover-strategy: region
taskmanager.bind-host: localhost
taskmanager.host: localhost
taskmanager.numberOfTaskSlots: ${FLINK_SLOTS:-2}
taskmanager.memory.process.size: ${FLINK_TASKMANAGER_MEMORY:-3072m}
# Beam's batch translation runs every stage of the job at once, each with its
# own exchanges: the job needs many more network buffers than Flink's
# defaults give (smaller buffers, more memory, fewer required per gate).
taskmanager.memory.segment-size: 8kb
taskmanager.memory.network.min: 512m
taskmanager.memory.network.max: 512m
taskmanager.network.memory.read-buffer.required-per-gate.max: 64
taskmanager.memory.managed.fraction: 0.2
parallelism.default: 1
classloader.resolve-order: parent-first
rest.address: localhost
rest.bind-address: localhost
rest.port: $FLINK_REST_PORT
blob.server.port: 0
# Beam's batch translation deploys the job's stages at once (over a hundred
# tasks within a second when a stage ends); the TaskManager takes them, and
# answers heartbeats, one at a time, and on a loaded machine the last waited
# longer than Flink's default 10 s ask timeout, which failed the job ("Cannot
# deploy task ... not responding after a rpcTimeout of 10000 ms"). A busy
# TaskManager gets 60 s to answer a heartbeat; a dead one is found sooner,
# when two heartbeats in a row cannot reach it
# (heartbeat.rpc-failure-threshold, 2 by default).
pekko.ask.timeout: ${FLINK_ASK_TIMEOUT:-120 s}
heartbeat.interval: 2000
heartbeat.timeout: 60000
# TaskManagers start with the JobManager, not after it: one that finds it not
# yet listening tries again a second later instead of ten.
cluster.registration.error-delay: 1000
CONF
  FLINK_JAVA_OPTS="$java_opts"
}


up() {
  require_java
  require_python
  # A cluster that failed to come up is not left half-started.
  trap stop_after_failed_up EXIT
  ensure_flink_home
  ensure_job_server

  local started=() starting=() jobmanager_new=0
  if ! daemon_alive "$STATE/jobmanager.pid"; then
    stop_all quiet
    PORT_NOTE_TEXT=''
    pick_port 'Flink REST' "${FLINK_REST_PORT:-8081}"; FLINK_REST_PORT=$PORT
    pick_port 'Flink JobManager RPC' "${FLINK_RPC_PORT:-6123}"
    FLINK_RPC_PORT=$PORT
    write_flink_conf
    write_flink_lib
    : >"$LOGS/jobmanager.log"
    start_daemon jobmanager "$LOGS/jobmanager.log" "$STATE" \
      env FLINK_CONF_DIR="$STATE/conf" FLINK_LIB_DIR="$STATE/lib" \
        FLINK_LOG_DIR="$LOGS" \
        FLINK_PID_DIR="$STATE/pids" "$FLINK_HOME/bin/jobmanager.sh" start-foreground
    jobmanager_new=1
    started+=(jobmanager)
  else
    read_env
  fi
  FLINK_JAVA_OPTS="$(sed -n 's/^env.java.opts.all: //p' \
    "$STATE/conf/config.yaml")"

  # The TaskManagers register with the JobManager once it is up (retrying
  # every cluster.registration.error-delay), and the job server and the
  # worker pool need it only when a job comes: all of them start while it
  # does, and are waited for afterwards.
  local i
  for ((i = 1; i <= ${FLINK_TASKMANAGERS:-1}; i++)); do
    if ! daemon_alive "$STATE/taskmanager-$i.pid"; then
      start_daemon "taskmanager-$i" "$LOGS/taskmanager-$i.log" "$STATE" \
        env FLINK_CONF_DIR="$STATE/conf" FLINK_LIB_DIR="$STATE/lib" \
        FLINK_LOG_DIR="$LOGS" \
        FLINK_PID_DIR="$STATE/pids" "$FLINK_HOME/bin/taskmanager.sh" start-foreground
      started+=("taskmanager-$i")
    fi
  done

  if ! daemon_alive "$STATE/job-server.pid"; then
    # Its logging backend: Flink's log4j 2 binding for SLF4J 1.7, the API
    # version of the job server's jars.
    rm -rf "$STATE/job-server/log4j"
    mkdir -p "$STATE/job-server/log4j"
    ln -s "$FLINK_HOME"/lib/log4j-slf4j-impl-*.jar \
      "$FLINK_HOME"/lib/log4j-api-*.jar "$FLINK_HOME"/lib/log4j-core-*.jar \
      "$STATE/job-server/log4j/"
    write_job_server_log_config "$STATE/conf/log4j-job-server.properties"
    # shellcheck disable=SC2086
    listen_start job-server 'Beam job server' JOB_SERVER_PORT 8099 \
      "$STATE/job-server" \
      java -Xmx768m $FLINK_JAVA_OPTS \
      -Dlog4j.configurationFile="$STATE/conf/log4j-job-server.properties" \
      -cp "$JOB_SERVER_LIB/*:$STATE/job-server/log4j/*" \
      org.apache.beam.runners.flink.FlinkJobServerDriver \
      --flink-master="localhost:$FLINK_REST_PORT" \
      --flink-conf-dir="$STATE/conf" --job-host=localhost \
      --job-port=@PORT@ --artifact-port=0 --expansion-port=0 \
      --artifacts-dir="$STATE/job-server/artifacts"
    starting+=(job-server)
  fi
  if ! daemon_alive "$STATE/worker-pool.pid"; then
    start_worker_pool
    starting+=(worker-pool)
  fi

  if ((jobmanager_new)); then
    wait_for_port "$FLINK_REST_PORT" 'Flink JobManager' \
      "$STATE/jobmanager.pid" "$LOGS/jobmanager.log" 120 ||
      die "port $FLINK_REST_PORT (Flink REST) was taken by another process \
while the JobManager started; run up again"
    write_env "FLINK_VERSION=$FLINK_VERSION" \
      "FLINK_REST_PORT=$FLINK_REST_PORT" "FLINK_RPC_PORT=$FLINK_RPC_PORT" \
      "PORT_NOTE_TEXT='$PORT_NOTE_TEXT'"
  fi

  wait_for_slots

  say_started ${started[@]+"${started[@]}"} -- \
    ${starting[@]+"${starting[@]}"}
  UP_DONE=1
  summary
}

# Waits until the JobManager counts every TaskManager's slots.
wait_for_slots() {
  local want=$((${FLINK_TASKMANAGERS:-1} * ${FLINK_SLOTS:-2})) got=0 waited=0
  while :; do
    got="$("$PY" - "$FLINK_REST_PORT" <<'PY' 2>/dev/null || echo 0
import json, sys, urllib.request
with urllib.request.urlopen(
    f'http://localhost:{sys.argv[1]}/overview', timeout=5) as r:
  print(json.load(r)['slots-total'])
PY
)"
    ((got >= want)) && return 0
    local i
    for ((i = 1; i <= ${FLINK_TASKMANAGERS:-1}; i++)); do
      daemon_alive "$STATE/taskmanager-$i.pid" || {
        tail -n 25 "$LOGS/taskmanager-$i.log" >&2
        die "TaskManager $i exited while starting; its log: \
$LOGS/taskmanager-$i.log"; }
    done
    ((waited >= 600)) && die "the JobManager counts $got of $want task \
slots after 120s; logs in $LOGS"
    sleep 0.2
    waited=$((waited + 1))
  done
}

summary() {
  read_env
  local notes=""
  [[ -n "${PORT_NOTE_TEXT:-}" ]] && notes=" ($PORT_NOTE_TEXT)"
  cat <<EOF
Flink $FLINK_VERSION is up$notes:
  Flink REST / web UI  http://localhost:$FLINK_REST_PORT
  Beam job server      localhost:$JOB_SERVER_PORT (Beam $BEAM_JAVA_VERSION)
  SDK worker pool      localhost:$WORKER_POOL_PORT
  logs                 $LOGS
Submit the preprocess job to it with:
  scripts/submit_flink.sh --job-endpoint localhost:$JOB_SERVER_PORT \\
    --flink-master localhost:$FLINK_REST_PORT \\
    --environment-type EXTERNAL --environment-config localhost:$WORKER_POOL_PORT \\
    --parallelism 2 --input 'data/census/adult.data' --output-dir out/preprocess-flink
Stop it with: make flink-down$([[ "$STATE" != "$CACHE/flink" ]] &&
  echo " ENGINE_STATE_DIR=$STATE")
EOF
}

stop_all() {
  local name
  for name in worker-pool job-server; do
    stop_daemon "$name"
  done
  for pidfile in "$STATE"/taskmanager-*.pid; do
    [[ -f "$pidfile" ]] || continue
    name="$(basename "$pidfile" .pid)"
    stop_daemon "$name"
  done
  stop_daemon jobmanager
  [[ "${1:-}" == quiet ]] || say "Flink cluster in $STATE is down"
}

status() {
  local name any=0
  for pidfile in "$STATE"/*.pid; do
    [[ -f "$pidfile" ]] || continue
    name="$(basename "$pidfile" .pid)"
    if daemon_alive "$pidfile"; then
      echo "$name: running (pid $(daemon_pid "$pidfile"))"
      any=1
    else
      echo "$name: not running"
    fi
  done
  ((any)) || { echo "no Flink cluster in $STATE"; return 3; }
}

engines_init flink
case "${1:-}" in
  up) up ;;
  down) stop_all ;;
  status) status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
