#!/usr/bin/env bash
# make up / make down: run the stack in the background with the environment
# as it is. With no MICRO_BROKER set, `up` also starts a nats-server with
# JetStream on a free loopback port (built from the nats-server module shippy
# already depends on) and points both services' MICRO_BROKER=jetstream at it:
# events are stored on disk until the email-service has sent them, so it can
# stop and start again without losing one. That nats-server runs with
# deploy/nats/shippy.conf: each service logs in with its own user and a
# password made on first use (STACK_DIR/secrets/), and may do only what the
# file allows. The registry stays go-micro's mdns, so bin/shippy-user-cli
# finds the user-service with nothing exported.
#
#   stack.sh up     start what is not running, wait until it serves
#   stack.sh down   stop everything `up` started (SIGTERM, SIGKILL after 30s)
#   stack.sh nats   start only the nats-server; print its URL
#
# STACK_DIR (default .run/stack) holds logs (appended across restarts), pid
# files, the SQLite file, the JetStream store and the NATS passwords;
# STACK_BIN (default bin) the binaries. Each service's ops server (/metrics,
# /healthz, /readyz) listens on loopback: USER_METRICS_ADDRESS (default
# 127.0.0.1:9091) and EMAIL_METRICS_ADDRESS (127.0.0.1:9092); 127.0.0.1:0
# picks free ports, for a second stack beside the first.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${STACK_DIR:-.run/stack}
bin=${STACK_BIN:-bin}
services=(shippy-user-service shippy-email-service)
mkdir -p "$dir"
: "${SQLITE_PATH:=$dir/users.db}"
export SQLITE_PATH

say() { printf '%s\n' "$*"; }
die() { printf 'stack: %s\n' "$*" >&2; exit 1; }

# pid_of NAME prints the pid of NAME started by this script, if it still runs.
# The command line is compared too: a stale pid file must not name a process
# that merely reused the number.
pid_of() {
  local f="$dir/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  case "$(ps -p "$pid" -o args= 2>/dev/null)" in
    *"$1"*) printf '%s\n' "$pid" ;;
    *) rm -f "$f"; return 1 ;;
  esac
}

# wait_for PID SECONDS CONDITION...: poll CONDITION until it holds; fail early
# when PID has exited.
wait_for() {
  local pid=$1 secs=$2 end
  shift 2
  end=$((SECONDS + secs))
  until "$@"; do
    kill -0 "$pid" 2>/dev/null || return 2
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.1
  done
}

fail_start() { # NAME LOG OFFSET STATUS
  local why="did not start within 30s"
  [ "$4" = 2 ] && why="exited at start"
  say "----- $2 (new lines)" >&2
  tail -c +"$(($3 + 1))" "$2" | tail -n 30 >&2
  die "$1 $why (log: $2)"
}

# secret NAME [BYTES] prints the file holding the secret NAME (a NATS
# password, or the JWT key), BYTES random bytes in hex (default 24), made
# with mode 0600 on first use and kept, so restarted programs log in again
# and tokens stay valid across a restart.
secret() {
  local f="$dir/secrets/$1"
  if [ ! -s "$f" ]; then
    mkdir -p "$dir/secrets"
    chmod 700 "$dir/secrets"
    (umask 077 && od -An -N"${2:-24}" -tx1 /dev/urandom | tr -d ' \n' >"$f")
  fi
  printf '%s\n' "$f"
}

start_nats() {
  local pid port=-1 log="$dir/nats-server.log" offset ports url
  if pid=$(pid_of nats-server); then
    cat "$dir/nats.url"
    return
  fi
  # The port of the first start is kept, so services started by an earlier
  # `up` still find the server after it was restarted.
  [ -f "$dir/nats.port" ] && port=$(cat "$dir/nats.port")
  touch "$log"
  offset=$(wc -c <"$log")
  NATS_USER_SERVICE_PASSWORD=$(cat "$(secret user-service)") \
  NATS_EMAIL_SERVICE_PASSWORD=$(cat "$(secret email-service)") \
  NATS_CLI_PASSWORD=$(cat "$(secret cli)") \
  NATS_OPS_PASSWORD=$(cat "$(secret ops)") \
    nohup "$bin/nats-server" -c deploy/nats/shippy.conf -a 127.0.0.1 -p "$port" -js -sd "$dir/nats" \
    --ports_file_dir "$dir" >>"$log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/nats-server.pid"
  ports="$dir/nats-server_$pid.ports"
  # nats-server writes the ports file once it accepts connections.
  wait_for "$pid" 30 test -s "$ports" || fail_start nats-server "$log" "$offset" $?
  url=$(grep -o 'nats://[^"]*' "$ports" | head -n1)
  [ -n "$url" ] || die "no client URL in $ports"
  echo "$url" >"$dir/nats.url"
  echo "${url##*:}" >"$dir/nats.port"
  say "nats-server started (pid $pid, $url, JetStream store $dir/nats, log $log)" >&2
  echo "$url"
}

# serving LOG OFFSET: the service logged, after OFFSET, that it serves.
serving() { tail -c +"$(($2 + 1))" "$1" | grep -Eq '"msg":"serving"|msg=serving( |$)'; }

start_service() { # NAME [VAR=VALUE...]
  local svc=$1 pid log="$dir/$1.log" offset
  shift
  if pid=$(pid_of "$svc"); then
    say "$svc already running (pid $pid)"
    return
  fi
  touch "$log"
  offset=$(wc -c <"$log")
  env "$@" nohup "$bin/$svc" >>"$log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/$svc.pid"
  wait_for "$pid" 30 serving "$log" "$offset" || fail_start "$svc" "$log" "$offset" $?
  say "$svc serving (pid $pid, log $log)"
}

metrics_address() { # NAME
  case $1 in
    shippy-user-service) printf '%s\n' "${USER_METRICS_ADDRESS:-127.0.0.1:9091}" ;;
    shippy-email-service) printf '%s\n' "${EMAIL_METRICS_ADDRESS:-127.0.0.1:9092}" ;;
  esac
}

up() {
  local svc user creds
  if [ -z "${MICRO_BROKER:-}" ]; then
    MICRO_BROKER_ADDRESS=$(start_nats)
    export MICRO_BROKER=jetstream MICRO_BROKER_ADDRESS
    say "events: JetStream at $MICRO_BROKER_ADDRESS (MICRO_BROKER=jetstream)"
  fi
  for svc in "${services[@]}"; do
    creds=(METRICS_ADDRESS="$(metrics_address "$svc")")
    if [ "${MICRO_BROKER_ADDRESS:-}" = "$(cat "$dir/nats.url" 2>/dev/null)" ]; then
      user=${svc#shippy-} # the stack's NATS: the service's own user
      creds+=(NATS_USER="$user" NATS_PASSWORD_FILE="$(secret "$user")")
    fi
    # Without a configured key the user-service would make one per process,
    # and every restart would sign everybody out.
    if [ "$svc" = shippy-user-service ] && [ -z "${JWT_SECRET:-}${JWT_SECRET_FILE:-}" ]; then
      creds+=(JWT_SECRET_FILE="$(secret jwt 48)")
    fi
    start_service "$svc" "${creds[@]}"
  done
}

stop_one() { # NAME
  local pid
  pid=$(pid_of "$1") || return 0
  kill -TERM "$pid" 2>/dev/null || true
  # The graceful stop drains work in flight; give it room, then make sure.
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -KILL "$pid" 2>/dev/null; then
    say "$1 did not stop within 30s of SIGTERM: killed (see $dir/$1.log)"
  else
    say "$1 stopped"
  fi
  rm -f "$dir/$1.pid"
}

down() {
  # The email-service first, the broker last: what is in flight finishes.
  stop_one shippy-email-service
  stop_one shippy-user-service
  stop_one nats-server
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  nats) start_nats ;;
  *) echo "usage: $0 up|down|nats" >&2; exit 2 ;;
esac
