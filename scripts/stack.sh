#!/usr/bin/env bash
# make up / make down: run both services in the background with the
# environment as it is (embedded defaults, or PostgreSQL and NATS when DB_* /
# DATABASE_URL and MICRO_* are set). Logs and pids live in .run/stack/.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.run/stack
mkdir -p "$dir"
: "${SQLITE_PATH:=$dir/users.db}"; export SQLITE_PATH

up() {
  for svc in shippy-user-service shippy-email-service; do
    if [ -f "$dir/$svc.pid" ] && kill -0 "$(cat "$dir/$svc.pid")" 2>/dev/null; then
      echo "$svc already running (pid $(cat "$dir/$svc.pid"))"; continue
    fi
    nohup "bin/$svc" >"$dir/$svc.log" 2>&1 &
    echo $! >"$dir/$svc.pid"
    echo "$svc started (pid $!, log $dir/$svc.log)"
  done
}

down() {
  for svc in shippy-email-service shippy-user-service; do
    [ -f "$dir/$svc.pid" ] || continue
    pid=$(cat "$dir/$svc.pid")
    if kill -TERM "$pid" 2>/dev/null; then
      # Give the service its graceful stop (it drains work in flight); then
      # make sure it is gone, and say so when it had to be killed.
      for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -KILL "$pid" 2>/dev/null; then
        echo "$svc did not stop within 30s of SIGTERM: killed (see $dir/$svc.log)"
      else
        echo "$svc stopped"
      fi
    fi
    rm -f "$dir/$svc.pid"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
