#!/usr/bin/env bash
# make compose-test: the README's "With Docker or Podman" commands, run for
# real: docker-compose (v1, Debian's) drives podman through a private API
# socket, builds the images, starts the stack and runs the CLI the way a user
# would, and this script checks what that user would see. Only DOCKER_HOST
# differs from the README. Base images are local stand-ins where they cannot
# be pulled (make container-bases). Everything it starts is removed on exit,
# failed or not.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/podman-env.sh
source scripts/podman-env.sh

UP_TIMEOUT=${COMPOSE_TEST_UP_TIMEOUT:-1500}   # up -d --build: the first build is most of it
STEP_TIMEOUT=${COMPOSE_TEST_STEP_TIMEOUT:-180} # any other compose command, and each wait
IMAGE_GOAL_MB=40
# The compose command: Debian's docker-compose v1 by default; COMPOSE_CMD="docker
# compose" runs the same checks with Compose v2 or later.
read -ra compose_cmd <<<"${COMPOSE_CMD:-docker-compose}"
PASSWORD='a long password'
python=$(command -v /usr/bin/python3 || command -v python3) # docker-compose's own

# docker-compose names the project after the folder (as the user's does).
project=${COMPOSE_PROJECT_NAME:-$(basename "$PWD")}
project=$(tr '[:upper:]' '[:lower:]' <<<"$project" | tr -cd 'a-z0-9_-')
services=(postgres nats mailpit user-service email-service)
MAILPIT=http://127.0.0.1:8025 # the inbox page docker-compose.yml publishes
# The screenshot of the welcome email in Mailpit's inbox (the README's comes
# from here: docs/mailpit-welcome.png).
SCREENSHOT_DIR=${COMPOSE_TEST_SCREENSHOT_DIR:-.run/compose-test}
built=(user-service email-service user-cli)

work=
health_pid=
timings=()
TOKEN=
t_start=$EPOCHREALTIME

log() { printf 'compose-test: %s\n' "$*"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# compose runs docker-compose as the README does, bounded in time, with no
# terminal (as in CI).
compose() {
  local limit=$STEP_TIMEOUT
  if [ "$1" = --timeout ]; then limit=$2; shift 2; fi
  timeout "$limit" "${compose_cmd[@]}" "$@" </dev/null
}

fail() {
  printf '\ncompose-test: FAILED: %s\n' "$*" >&2
  if [ -n "$work" ]; then
    compose --timeout 60 ps >&2 || true
    printf -- '--- docker-compose logs (last 80 lines per service)\n' >&2
    compose --timeout 60 logs --no-color --tail=80 >&2 || true
  fi
  exit 1
}

cleanup() {
  local status=$?
  if [ -n "$health_pid" ]; then
    kill "$health_pid" 2>/dev/null || true
    wait "$health_pid" 2>/dev/null || true
  fi
  # Only through our own socket: a DOCKER_HOST from the caller's shell is
  # never touched.
  if [ -n "$PODMAN_SERVICE_PID" ]; then
    compose --timeout 180 down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  podman_service_stop
  [ -n "$work" ] && rm -rf "$work"
  exit "$status"
}

# step NAME FUNCTION: runs one check and records how long it took.
step() {
  local name=$1 t0=$EPOCHREALTIME
  shift
  printf '\n=== compose-test: %s (%s)\n' "$name" "$(date +%T)"
  "$@"
  timings+=("$(printf '%-56s %7ss' "$name" "$(since "$t0")")")
}

# --- health checks ----------------------------------------------------------

# podman runs health checks from systemd timers, and there is no systemd here:
# without this loop a container stays "starting" forever and depends_on
# (condition: service_healthy) never lets the services start. Containers still
# starting are checked every second, the others every 5 s, as Docker would.
drive_health_checks() {
  local n=0 filter=(--filter "label=com.docker.compose.project=$project") id
  while true; do
    for id in $(podman ps -q "${filter[@]}" --filter health=starting 2>/dev/null); do
      podman healthcheck run "$id" >/dev/null 2>&1 || true
    done
    if [ $((n % 5)) -eq 0 ]; then
      for id in $(podman ps -q "${filter[@]}" --filter health=healthy 2>/dev/null) \
                $(podman ps -q "${filter[@]}" --filter health=unhealthy 2>/dev/null); do
        podman healthcheck run "$id" >/dev/null 2>&1 || true
      done
    fi
    n=$((n + 1))
    sleep 1
  done
}

# container_of SERVICE: the id of the service's container (not a run one).
container_of() {
  podman ps -a -q --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1" --filter label=com.docker.compose.oneoff=False
}

# health_of SERVICE: its health status, or "exited" when the container has
# stopped and will not restart (podman keeps its last status, "starting").
health_of() {
  local id state
  id=$(container_of "$1")
  [ -n "$id" ] || { echo missing; return; }
  state=$(podman inspect --format '{{.State.Status}} {{.HostConfig.RestartPolicy.Name}} {{.State.Health.Status}}' "$id" 2>/dev/null) \
    || { echo missing; return; }
  case $state in
    "exited no "* | "exited  "*) echo exited ;;
    *) echo "${state##* }" ;;
  esac
}

# wait_healthy SERVICE...: until each one's health check passes.
wait_healthy() {
  local deadline=$((SECONDS + STEP_TIMEOUT)) svc health pending
  while true; do
    pending=()
    for svc in "$@"; do
      health=$(health_of "$svc")
      [ "$health" = exited ] && fail "$svc exited (it has no restart policy): see its logs below"
      [ "$health" = healthy ] || pending+=("$svc=$health")
    done
    [ ${#pending[@]} -eq 0 ] && return 0
    [ $SECONDS -lt $deadline ] || fail "not healthy within ${STEP_TIMEOUT}s: ${pending[*]}"
    sleep 1
  done
}

# --- the CLI, as the README runs it ----------------------------------------

# cli [-T] [-e VAR[=VALUE]]... ARGS...: docker-compose run --rm [-T] [-e ...]
# user-cli ARGS; stdout in $out, exit code in $rc, stderr in $work/cli.err.
cli() {
  local opts=(--rm)
  while [ $# -gt 0 ]; do
    case $1 in
      -T) opts+=(-T); shift ;;
      -e) opts+=(-e "$2"); shift 2 ;; # -e VAR[=VALUE], as docker-compose run takes it
      *) break ;;
    esac
  done
  rc=0
  out=$(compose run "${opts[@]}" user-cli "$@" 2>"$work/cli.err") || rc=$?
}

cli_ok() {
  cli "$@"
  [ "$rc" -eq 0 ] || { cat "$work/cli.err" >&2; fail "docker-compose run user-cli $* exited $rc; want 0"; }
}

create_user() { # NAME EMAIL
  cli_ok create --name "$1" --email "$2" --password "$PASSWORD"
  # The last line: a run that first builds the image prints the build before.
  local created
  created=$(tail -n 1 <<<"$out")
  [[ $created =~ ^Created:\ [^[:space:]]+$ ]] || fail "user-cli create printed '$out'; want 'Created: <id>'"
  log "$created ($1)"
}

# emails_to NAME [LOG]: how many welcome emails to NAME the email-service's
# log (docker-compose logs email-service, unless given) shows.
emails_to() {
  local logs=${2-$(compose logs --no-color email-service)}
  grep -cE "Sending email to: $1\$" <<<"$logs" || true
}

# mailpit_counts ADDRESS...: how many emails Mailpit holds to each address,
# one number a line, from its HTTP API (GET /api/v1/messages).
mailpit_counts() {
  local json
  json=$(curl -fsS --max-time 10 "$MAILPIT/api/v1/messages?limit=1000") || fail "GET $MAILPIT/api/v1/messages failed"
  "$python" -c '
import json, sys
msgs = json.load(sys.stdin).get("messages") or []
for a in sys.argv[1:]:
    print(sum(1 for m in msgs for t in (m.get("To") or []) if t.get("Address", "").lower() == a.lower()))' "$@" <<<"$json"
}

# jetstream_settled: every JetStream consumer has delivered and been acked
# for everything, so no redelivery (and no duplicate email) can still come.
jetstream_settled() {
  local nats json
  nats=$(container_of nats)
  json=$(podman exec "$nats" wget -q -O - 'http://127.0.0.1:8222/jsz?consumers=true' 2>/dev/null) || return 1
  "$python" -c '
import json, sys
busy = 0
for acct in json.load(sys.stdin).get("account_details") or []:
    for stream in acct.get("stream_detail") or []:
        for c in stream.get("consumer_detail") or []:
            busy += c.get("num_pending", 0) + c.get("num_ack_pending", 0)
sys.exit(1 if busy else 0)' <<<"$json"
}

# --- the steps --------------------------------------------------------------

setup() {
  podman_install docker-compose debootstrap curl openssl chromium
  command -v docker >/dev/null || podman_install podman-docker # docker-compose run starts containers with `docker start`
  podman_configure
  work=$(mktemp -d /tmp/shippy-compose.XXXXXX)
  podman_service_start "$work"
  # The README's first lines: .env with JWT_SECRET and the NATS passwords
  # (kept if there already), and the admin who may list users.
  make --no-print-directory compose-env
  export ADMIN_EMAILS=ewan@example.com
  log "podman $(podman version --format '{{.Version}}'), ${compose_cmd[*]} $(compose version --short 2>/dev/null || compose version | head -n 1), DOCKER_HOST=$DOCKER_HOST, project $project"
  # Nothing from an earlier run may count: its containers, volumes, or a
  # user-cli image that `run` would use without building.
  compose --timeout 180 down -v --remove-orphans >/dev/null 2>&1 || true
  local svc
  for svc in "${built[@]}"; do
    podman rmi -f "${project}_$svc" >/dev/null 2>&1 || true
    podman rmi -f "${project}-$svc" >/dev/null 2>&1 || true
  done
  health_pid=
  drive_health_checks &
  health_pid=$!
}

bases() {
  bash scripts/container-bases.sh
}

# The program that opens Mailpit's inbox in headless Chromium (its own
# module, tools/mailpit: chromedp stays out of shippy's go.mod).
inbox_tool() {
  GOTOOLCHAIN=auto go -C tools/mailpit build -o "$work/inboxcheck" ./inboxcheck || fail "building tools/mailpit/inboxcheck failed"
}

up() {
  local t0=$EPOCHREALTIME line
  # Timestamps on compose's output show where the build ends.
  local status=0
  compose --timeout "$UP_TIMEOUT" up -d --build 2>&1 | while IFS= read -r line; do
    printf '%7ss %s\n' "$(since "$t0")" "$line"
  done | tee "$work/up.log" | { grep --line-buffered -vE '^ *[0-9.]+s --> [0-9a-f]+$' || true; } || status=$?
  [ "$status" -eq 0 ] || fail "docker-compose up -d --build failed (exit $status)"
  wait_healthy "${services[@]}"
  up_to_healthy=$(since "$t0")
  build_s=$(awk '/Successfully built/ { t = $1 + 0 } END { print t }' "$work/up.log")
  log "up -d --build to all healthy: ${up_to_healthy}s (build ${build_s:-?}s, then start to healthy $(awk -v a="$up_to_healthy" -v b="${build_s:-0}" 'BEGIN { printf "%.1f", a - b }')s)"
}

first_user() {
  # up --build leaves out user-cli (profile cli): this first run builds it,
  # mostly from the build stage cached by up.
  STEP_TIMEOUT=$UP_TIMEOUT create_user 'Ewan Valentine' ewan@example.com
  local deadline=$((SECONDS + STEP_TIMEOUT))
  until [ "$(emails_to 'Ewan Valentine')" -ge 1 ]; do
    [ $SECONDS -lt $deadline ] || fail "the email-service did not print 'Sending email to: Ewan Valentine' within ${STEP_TIMEOUT}s"
    sleep 1
  done
  until jetstream_settled; do
    [ $SECONDS -lt $deadline ] || fail "JetStream still has unacked or pending messages after ${STEP_TIMEOUT}s"
    sleep 1
  done
  [ "$(emails_to 'Ewan Valentine')" -eq 1 ] || fail "'Sending email to: Ewan Valentine' printed $(emails_to 'Ewan Valentine') times; want once"
  log "email-service: Sending email to: Ewan Valentine (once)"
  local n
  n=$(mailpit_counts ewan@example.com)
  [ "$n" -eq 1 ] || fail "Mailpit holds $n emails to ewan@example.com; want 1"
  log "Mailpit: one email to ewan@example.com"
}

# The inbox as a developer sees it: headless Chromium opens $MAILPIT, finds
# the welcome email to Ewan in the list, opens it, finds his name in the
# body, and saves a screenshot.
inbox_in_browser() {
  mkdir -p "$SCREENSHOT_DIR"
  "$work/inboxcheck" --url "$MAILPIT" --name 'Ewan Valentine' --screenshot "$SCREENSHOT_DIR/mailpit-welcome.png" \
    || fail "the welcome email to Ewan Valentine is not in Mailpit's inbox page $MAILPIT (headless Chromium)"
}

# auth, then list and validate with its token (listing every user takes an
# admin's token: ADMIN_EMAILS names Ewan, as in the README).
auth_list_validate() {
  # As the README captures the token: -T, no terminal.
  cli_ok -T auth --email ewan@example.com --password "$PASSWORD"
  TOKEN=$out
  [[ $TOKEN =~ ^[A-Za-z0-9._-]+$ ]] || fail "user-cli auth printed '$TOKEN'; want a token alone"
  cli_ok list --token "$TOKEN"
  grep -q 'ewan@example.com' <<<"$out" || fail "user-cli list does not show ewan@example.com: $out"
  cli_ok validate --token "$TOKEN"
  log "auth, list, validate: ok"
  cli auth --email ewan@example.com --password 'not the password'
  [ "$rc" -eq 1 ] || { cat "$work/cli.err" >&2; fail "user-cli auth with a wrong password exited $rc; want 1"; }
  log "auth with a wrong password: exit 1 ($(grep -m 1 'shippy-user-cli' "$work/cli.err" | tr -d '\r'))"
}

durable_delivery() {
  local i name names=()
  compose stop email-service
  for i in $(seq -w 1 10); do
    name="Durable User $i"
    names+=("$name")
    create_user "$name" "durable$i@example.com"
  done
  compose kill -s SIGKILL nats
  compose start nats
  wait_healthy nats
  compose start email-service
  wait_healthy email-service

  local deadline=$((SECONDS + STEP_TIMEOUT)) missing logs
  while true; do
    missing=0
    logs=$(compose logs --no-color email-service)
    for name in "${names[@]}"; do
      [ "$(emails_to "$name" "$logs")" -ge 1 ] || missing=$((missing + 1))
    done
    [ $missing -eq 0 ] && jetstream_settled && break
    [ $SECONDS -lt $deadline ] || fail "$missing of 10 welcome emails missing (or JetStream not settled) ${STEP_TIMEOUT}s after the email-service started again"
    sleep 1
  done
  logs=$(compose logs --no-color email-service)
  for name in 'Ewan Valentine' "${names[@]}"; do
    [ "$(emails_to "$name" "$logs")" -eq 1 ] || fail "'Sending email to: $name' printed $(emails_to "$name" "$logs") times; want once"
  done
  local addrs=(ewan@example.com) counts i
  for i in $(seq -w 1 10); do addrs+=("durable$i@example.com"); done
  mapfile -t counts < <(mailpit_counts "${addrs[@]}")
  for i in "${!addrs[@]}"; do
    [ "${counts[$i]:-0}" -eq 1 ] || fail "Mailpit holds ${counts[$i]:-0} emails to ${addrs[$i]}; want 1"
  done
  log "10 users created while the email-service was stopped and NATS was SIGKILLed: 10 welcome emails, each once (log and Mailpit)"
}

# The README's operator recipes, for real: shippy-user-cli events as the
# NATS user ops (the stream holds the 11 users' events, the dead-letter
# stream none), and go-micro's own micro call in a container on the compose
# network, logged in to NATS as cli through the URL.
events_and_micro() {
  local n ops_pw cli_pw
  ops_pw=$(sed -n 's/^NATS_OPS_PASSWORD=//p' .env)
  cli_pw=$(sed -n 's/^NATS_CLI_PASSWORD=//p' .env)
  [ -n "$ops_pw" ] && [ -n "$cli_pw" ] || fail ".env lacks NATS_OPS_PASSWORD or NATS_CLI_PASSWORD"
  export NATS_PASSWORD=$ops_pw
  cli -T -e NATS_USER=ops -e NATS_PASSWORD --json events tail --from-start --count 11
  [ "$rc" -eq 0 ] || { cat "$work/cli.err" >&2; fail "user-cli events tail --from-start --count 11 exited $rc; want 0"; }
  n=$(grep -c '"event_id"' <<<"$out" || true)
  [ "$n" -eq 11 ] || fail "events tail --from-start --count 11 printed $n events; want 11: $out"
  grep -q '"email":"ewan@example.com"' <<<"$out" || fail "events tail does not show Ewan's event: $out"
  cli -T -e NATS_USER=ops -e NATS_PASSWORD events dead-letters
  [ "$rc" -eq 0 ] && grep -q 'No dead letters.' <<<"$out" || { cat "$work/cli.err" >&2; fail "user-cli events dead-letters exited $rc, printed '$out'; want 0 and none"; }
  unset NATS_PASSWORD
  log "events tail --from-start: 11 events; events dead-letters: none (as NATS user ops)"

  make --no-print-directory micro >/dev/null || fail "make micro failed"
  out=$(timeout "$STEP_TIMEOUT" docker run --rm --network "${project}_default" -v "$PWD/bin/micro:/micro:ro" \
          -e MICRO_REGISTRY=nats -e MICRO_REGISTRY_ADDRESS="nats://cli:$cli_pw@nats:4222" \
          gcr.io/distroless/static-debian12:nonroot /micro call go.micro.srv.user UserService.Create \
          '{"name":"Micro Caller","email":"micro@example.com","password":"a long password"}' 2>&1) \
    || fail "micro call go.micro.srv.user UserService.Create in a container failed: $out"
  grep -q '"email":"micro@example.com"' <<<"$out" || fail "micro call UserService.Create printed '$out'; want the created user"
  log "micro call go.micro.srv.user UserService.Create (go-micro's CLI, in a container on ${project}_default): created"
}

restart_user_service() {
  local before after
  before=$(podman inspect --format '{{.State.StartedAt}}' "$(container_of user-service)")
  compose restart user-service
  after=$(podman inspect --format '{{.State.StartedAt}}' "$(container_of user-service)")
  [ "$before" != "$after" ] || fail "docker-compose restart user-service did not restart it"
  wait_healthy user-service
  cli_ok list --token "$TOKEN"
  local n
  n=$(grep -cE '@example\.com' <<<"$out" || true)
  [ "$n" -eq 12 ] || fail "after the restart, user-cli list shows $n users; want 12: $out"
  log "after the restart: 12 users listed"
}

down() {
  compose down -v
  local left
  left=$(podman ps -a -q --filter "label=com.docker.compose.project=$project")
  left+=$(podman network ls -q --filter "label=com.docker.compose.project=$project")
  left+=$(podman volume ls -q --filter "label=com.docker.compose.project=$project")
  # And by name, in case a label went missing on the way through the API.
  left+=$(podman ps -a --format '{{.Names}}' | grep -E "^${project}[_-]" || true)
  left+=$(podman network ls --format '{{.Name}}' | grep -E "^${project}[_-]" || true)
  left+=$(podman volume ls --format '{{.Name}}' | grep -E "^${project}[_-]" || true)
  [ -z "$left" ] || fail "docker-compose down -v left: $left"
  log "no container, network or volume of project $project left"
}

image_sizes() {
  local svc bytes mb
  printf '%-24s %10s\n' image size
  for svc in "${built[@]}"; do
    # docker-compose v1 names it project_service, Compose v2 project-service.
    bytes=$(podman image inspect --format '{{.Size}}' "${project}_$svc" 2>/dev/null \
            || podman image inspect --format '{{.Size}}' "${project}-$svc") || fail "no image of $svc"
    mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')
    printf '%-24s %7s MB%s\n' "$svc" "$mb" \
      "$(awk -v m="$mb" -v g="$IMAGE_GOAL_MB" 'BEGIN { if (m >= g) printf "  (over the %d MB goal)", g }')"
  done
}

main() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  step "podman, docker-compose, API socket" setup
  step "base images (make container-bases)" bases
  step "build tools/mailpit/inboxcheck (chromedp)" inbox_tool
  step "docker-compose up -d --build, until healthy" up
  step "run --rm user-cli create; the welcome email" first_user
  step "Mailpit's inbox page in headless Chromium" inbox_in_browser
  step "run --rm user-cli auth, list, validate; wrong password" auth_list_validate
  step "stop email-service, 10 users, SIGKILL nats, start" durable_delivery
  step "events as ops; micro call in a container" events_and_micro
  step "restart user-service; users still listed" restart_user_service
  step "image sizes" image_sizes
  step "docker-compose down -v" down
  printf '\n=== compose-test: timings\n'
  printf '%s\n' "${timings[@]}"
  printf '%-56s %7ss\n' total "$(since "$t_start")"
  printf '%-56s %7ss\n' "  of which up -d --build to healthy" "$up_to_healthy"
  echo "compose-test: OK"
}

main "$@"
