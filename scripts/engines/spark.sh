#!/usr/bin/env bash
# A local Apache Spark standalone cluster for the preprocess job.
#
#   scripts/engines/spark.sh up      # make spark-up
#   scripts/engines/spark.sh down    # make spark-down
#   scripts/engines/spark.sh status
#
# `up` starts, as separate processes: a Spark master and a worker from a real
# Spark distribution (Spark 3.5, the `deps/` folder of PyPI's pyspark source
# distribution, used as a distribution only), Beam's Spark 3 job server
# (resolved from Maven Central; it is the Spark driver of each job and its
# executors run on the worker) and Beam's SDK worker pool (EXTERNAL
# environment), then prints the scripts/submit_spark.sh command that targets
# them. Idempotent like flink.sh: running processes are kept, dead ones
# started again. `down` stops every process `up` started, by its PID.
#
# Ports (environment): SPARK_MASTER_PORT (7077), SPARK_MASTER_WEBUI_PORT
# (8080), SPARK_WORKER_WEBUI_PORT (8082), JOB_SERVER_PORT (8099),
# WORKER_POOL_PORT (50000); a taken port is replaced by a free one and the
# printed command says so. SPARK_WORKER_CORES (2) and SPARK_WORKER_MEMORY
# (3g) size the worker. See lib.sh for the cache, state and log folders.
set -euo pipefail
SCRIPT="spark.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SPARK_REQUIREMENTS="$ENGINES_DIR/spark-dist.txt"
SPARK_POM="$ENGINES_DIR/spark-job-server.pom.xml"
SPARK_VERSION="$(sdist_version "$SPARK_REQUIREMENTS" pyspark)"
BEAM_JAVA_VERSION="$(sed -n 's:.*<beam.version>\(.*\)</beam.version>.*:\1:p' \
  "$SPARK_POM")"
# What Spark's own launcher adds for Java 17; the job server is a Spark driver
# started without that launcher.
SPARK_JAVA_OPTS="-XX:+IgnoreUnrecognizedVMOptions \
--add-opens=java.base/java.lang=ALL-UNNAMED \
--add-opens=java.base/java.lang.invoke=ALL-UNNAMED \
--add-opens=java.base/java.lang.reflect=ALL-UNNAMED \
--add-opens=java.base/java.io=ALL-UNNAMED \
--add-opens=java.base/java.net=ALL-UNNAMED \
--add-opens=java.base/java.nio=ALL-UNNAMED \
--add-opens=java.base/java.util=ALL-UNNAMED \
--add-opens=java.base/java.util.concurrent=ALL-UNNAMED \
--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED \
--add-opens=java.base/sun.nio.ch=ALL-UNNAMED \
--add-opens=java.base/sun.nio.cs=ALL-UNNAMED \
--add-opens=java.base/sun.security.action=ALL-UNNAMED \
--add-opens=java.base/sun.util.calendar=ALL-UNNAMED \
--add-opens=jdk.unsupported/sun.misc=ALL-UNNAMED \
-Djdk.reflect.useDirectMethodHandle=false"

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

ensure_spark_home() {
  SPARK_HOME="$CACHE/dist/spark-$SPARK_VERSION"
  [[ -f "$SPARK_HOME/.complete" ]] && return 0
  local downloads="$CACHE/downloads" file tmp
  file="$downloads/pyspark-$SPARK_VERSION.tar.gz"
  [[ -f "$file" ]] || fetch_pypi_dist "$SPARK_REQUIREMENTS" "$downloads"
  verify_sha256 "$file" "$(sdist_hash "$SPARK_REQUIREMENTS" pyspark)"
  say "unpacking Spark $SPARK_VERSION into $SPARK_HOME"
  tmp="$SPARK_HOME.partial"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  tar -xzf "$file" -C "$tmp" --strip-components=2 \
    "pyspark-$SPARK_VERSION/deps"
  [[ -x "$tmp/bin/spark-class" ]] && ls "$tmp"/jars/spark-core_*.jar \
      >/dev/null 2>&1 || die "the pyspark sdist did not unpack into a Spark \
home (no bin/spark-class or jars/spark-core_*.jar in $tmp)"
  touch "$tmp/.complete"
  rm -rf "$SPARK_HOME"
  mv "$tmp" "$SPARK_HOME"
}

ensure_job_server() {
  JOB_SERVER_LIB="$CACHE/dist/beam-spark-job-server-$BEAM_JAVA_VERSION"
  if [[ ! -f "$JOB_SERVER_LIB/beam-runners-spark-3-$BEAM_JAVA_VERSION.jar" ]]
  then
    resolve_maven "$SPARK_POM" "$JOB_SERVER_LIB"
  fi
}

spark_env() {
  SPARK_ENV=(env SPARK_HOME="$SPARK_HOME" SPARK_CONF_DIR="$STATE/conf"
    SPARK_LOG_DIR="$LOGS" SPARK_PID_DIR="$STATE/pids"
    SPARK_WORKER_DIR="$STATE/work" SPARK_LOCAL_DIRS="$STATE/tmp"
    SPARK_LOCAL_IP=127.0.0.1 SPARK_DAEMON_MEMORY=512m
    SPARK_DAEMON_JAVA_OPTS="-Djava.io.tmpdir=$STATE/tmp")
}

up() {
  require_java
  require_python
  # A cluster that failed to come up is not left half-started.
  trap stop_after_failed_up EXIT
  ensure_spark_home
  ensure_job_server
  spark_env

  local started=() starting=() master_new=0
  if ! daemon_alive "$STATE/master.pid"; then
    stop_all quiet
    PORT_NOTE_TEXT=''
    pick_port 'Spark master' "${SPARK_MASTER_PORT:-7077}"
    SPARK_MASTER_PORT=$PORT
    pick_port 'Spark master web UI' "${SPARK_MASTER_WEBUI_PORT:-8080}"
    SPARK_MASTER_WEBUI_PORT=$PORT
    pick_port 'Spark worker web UI' "${SPARK_WORKER_WEBUI_PORT:-8082}"
    SPARK_WORKER_WEBUI_PORT=$PORT
    mkdir -p "$STATE/conf" "$STATE/pids" "$STATE/work" "$STATE/tmp"
    cp "$SPARK_HOME/conf/log4j2.properties.template" \
      "$STATE/conf/log4j2.properties" 2>/dev/null || true
    start_daemon master "$LOGS/master.log" "$STATE" "${SPARK_ENV[@]}" \
      "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
      --host localhost --port "$SPARK_MASTER_PORT" \
      --webui-port "$SPARK_MASTER_WEBUI_PORT"
    master_new=1
  else
    read_env
  fi

  # The job server (the jobs' Spark driver) and the worker pool need the
  # master only when a job comes: they start while it does.
  if ! daemon_alive "$STATE/job-server.pid"; then
    mkdir -p "$STATE/job-server"
    # The driver's classpath is Beam's jars, then Spark's (Beam needs a newer
    # Guava than Spark's unshaded one); the executors, on the same machine,
    # get Beam's from the same folder, also first. Spark's SLF4J 2 API comes
    # before Beam's 1.7 one, which does not find Spark's log4j 2 binding.
    local slf4j
    slf4j="$(ls "$SPARK_HOME"/jars/slf4j-api-2.*.jar)"
    write_job_server_log_config "$STATE/conf/log4j-job-server.properties"
    # shellcheck disable=SC2086
    listen_start job-server 'Beam job server' JOB_SERVER_PORT 8099 \
      "$STATE/job-server" \
      env SPARK_HOME="$SPARK_HOME" SPARK_LOCAL_IP=127.0.0.1 \
      SPARK_LOCAL_DIRS="$STATE/tmp" \
      java -Xmx1g $SPARK_JAVA_OPTS -Djava.io.tmpdir="$STATE/tmp" \
      -Dlog4j.configurationFile="$STATE/conf/log4j-job-server.properties" \
      -Dspark.executor.extraClassPath="$JOB_SERVER_LIB/*" \
      -Dspark.executor.extraJavaOptions="-Djava.io.tmpdir=$STATE/tmp" \
      -Dspark.executor.memory="${SPARK_EXECUTOR_MEMORY:-2g}" \
      -Dspark.driver.host=localhost -Dspark.ui.enabled=false \
      -cp "$slf4j:$JOB_SERVER_LIB/*:$SPARK_HOME/jars/*" \
      org.apache.beam.runners.spark.SparkJobServerDriver \
      --spark-master-url="spark://localhost:$SPARK_MASTER_PORT" \
      --job-host=localhost --job-port=@PORT@ --artifact-port=0 \
      --expansion-port=0 --artifacts-dir="$STATE/job-server/artifacts"
    starting+=(job-server)
  fi
  if ! daemon_alive "$STATE/worker-pool.pid"; then
    start_worker_pool
    starting+=(worker-pool)
  fi

  if ((master_new)); then
    wait_for_port "$SPARK_MASTER_PORT" 'Spark master' "$STATE/master.pid" \
      "$LOGS/master.log" 120 ||
      die "port $SPARK_MASTER_PORT (Spark master) was taken by another \
process while the master started; run up again"
    started+=(master)
    write_env "SPARK_VERSION=$SPARK_VERSION" \
      "SPARK_MASTER_PORT=$SPARK_MASTER_PORT" \
      "SPARK_MASTER_WEBUI_PORT=$SPARK_MASTER_WEBUI_PORT" \
      "SPARK_WORKER_WEBUI_PORT=$SPARK_WORKER_WEBUI_PORT" \
      "PORT_NOTE_TEXT='$PORT_NOTE_TEXT'"
  fi

  # A restarted worker is waited for by its own log: the master may still
  # list the killed one as ALIVE for a while.
  local worker_log_from=0
  if ! daemon_alive "$STATE/worker.pid"; then
    worker_log_from=1
    [[ -f "$LOGS/worker.log" ]] &&
      worker_log_from=$(($(wc -l <"$LOGS/worker.log") + 1))
    start_daemon worker "$LOGS/worker.log" "$STATE" "${SPARK_ENV[@]}" \
      "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
      --host localhost --webui-port "$SPARK_WORKER_WEBUI_PORT" \
      --cores "${SPARK_WORKER_CORES:-2}" \
      --memory "${SPARK_WORKER_MEMORY:-3g}" --work-dir "$STATE/work" \
      "spark://localhost:$SPARK_MASTER_PORT"
    started+=(worker)
  fi
  wait_for_worker "$worker_log_from"

  say_started ${started[@]+"${started[@]}"} -- \
    ${starting[@]+"${starting[@]}"}
  UP_DONE=1
  summary
}

# wait_for_worker FROM: waits until the master lists a worker as ALIVE and,
# when FROM > 0, until the worker's log from line FROM on says it registered.
wait_for_worker() {
  local from="$1" waited=0
  until { ((from == 0)) || awk -v from="$from" 'NR >= from &&
    /Successfully registered with master/ { found = 1 }
    END { exit !found }' "$LOGS/worker.log"; } &&
    "$PY" - "$SPARK_MASTER_WEBUI_PORT" <<'PY' 2>/dev/null
import json, sys, urllib.request
with urllib.request.urlopen(
    f'http://localhost:{sys.argv[1]}/json/', timeout=5) as r:
  workers = json.load(r)['workers']
sys.exit(0 if any(w['state'] == 'ALIVE' for w in workers) else 1)
PY
  do
    daemon_alive "$STATE/worker.pid" || {
      tail -n 25 "$LOGS/worker.log" >&2
      die "the Spark worker exited while starting; its log: $LOGS/worker.log"; }
    ((waited >= 600)) && die "the Spark master lists no live worker after \
120s; logs in $LOGS"
    sleep 0.2
    waited=$((waited + 1))
  done
}

summary() {
  read_env
  local notes=""
  [[ -n "${PORT_NOTE_TEXT:-}" ]] && notes=" ($PORT_NOTE_TEXT)"
  cat <<EOF
Spark $SPARK_VERSION is up$notes:
  Spark master         spark://localhost:$SPARK_MASTER_PORT (web UI http://localhost:$SPARK_MASTER_WEBUI_PORT)
  Beam job server      localhost:$JOB_SERVER_PORT (Beam $BEAM_JAVA_VERSION)
  SDK worker pool      localhost:$WORKER_POOL_PORT
  logs                 $LOGS
Submit the preprocess job to it with:
  scripts/submit_spark.sh --job-endpoint localhost:$JOB_SERVER_PORT \\
    --environment-type EXTERNAL --environment-config localhost:$WORKER_POOL_PORT \\
    --input 'data/census/adult.data' --output-dir out/preprocess-spark
Stop it with: make spark-down$([[ "$STATE" != "$CACHE/spark" ]] &&
  echo " ENGINE_STATE_DIR=$STATE")
EOF
}

stop_all() {
  local name
  for name in worker-pool job-server worker master; do
    stop_daemon "$name"
  done
  [[ "${1:-}" == quiet ]] || say "Spark cluster in $STATE is down"
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
  ((any)) || { echo "no Spark cluster in $STATE"; return 3; }
}

engines_init spark
case "${1:-}" in
  up) up ;;
  down) stop_all ;;
  status) status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
