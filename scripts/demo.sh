#!/usr/bin/env bash
# make demo: the tutorial's whole pipeline once, as `make up` runs it (SQLite,
# the durable JetStream broker on a nats-server of its own): start it and both
# services with stack.sh, create a user with the CLI, wait for the
# email-service's welcome line, stop everything. Unlike `make up`, the demo
# uses its NATS as the registry too (not mdns), so a stack already running on
# this host cannot answer in its place.
set -euo pipefail
cd "$(dirname "$0")/.."

export STACK_DIR=.run/demo
dir=$STACK_DIR
rm -rf "$dir" && mkdir -p "$dir"
deadline=${DEMO_TIMEOUT:-60}

# The demo is about the embedded defaults: ignore whatever the shell points at.
unset DATABASE_URL DB_HOST DB_PORT DB_USER DB_PASSWORD DB_PASS DB_NAME DB_SSLMODE \
      MICRO_BROKER MICRO_BROKER_ADDRESS MICRO_REGISTRY MICRO_REGISTRY_ADDRESS \
      MICRO_TRANSPORT MICRO_TRANSPORT_ADDRESS MICRO_SERVER_ADDRESS JWT_SECRET JWT_SECRET_FILE \
      NATS_USER NATS_PASSWORD NATS_PASSWORD_FILE NATS_CA_FILE METRICS_ADDRESS

trap 'bash scripts/stack.sh down >/dev/null' EXIT
fail() {
  echo "demo: $*" >&2
  for f in "$dir"/*.log; do echo "----- $f" >&2; tail -n 40 "$f" >&2; done
  exit 1
}

url=$(bash scripts/stack.sh nats) || fail "nats-server did not start"
# The services get the JetStream broker and their NATS users from stack.sh;
# the registry is this NATS too, and the CLI logs in as the cli user.
export MICRO_REGISTRY=nats MICRO_REGISTRY_ADDRESS=$url
# Free ports for the ops servers: a `make up` stack may hold the usual ones.
export USER_METRICS_ADDRESS=127.0.0.1:0 EMAIL_METRICS_ADDRESS=127.0.0.1:0
bash scripts/stack.sh up || fail "the services did not start"

name="Ewan Valentine"
email="ewan.$(date +%s).$$@example.com"
end=$((SECONDS + deadline))
out=$(SHIPPY_PASSWORD='demo-password-123' NATS_USER=cli NATS_PASSWORD_FILE="$dir/secrets/cli" bin/shippy-user-cli --timeout 10s create \
        --name "$name" --email "$email" --company BBC 2>"$dir/cli.err") \
  || { cat "$dir/cli.err" >&2; fail "create failed"; }
echo "demo: $ shippy-user-cli create --name \"$name\" --email $email --company BBC"
echo "demo: $out"

until grep -q "Sending email to: $name" "$dir/shippy-email-service.log"; do
  [ $SECONDS -lt $end ] || fail "the email-service did not print 'Sending email to: $name' within ${deadline}s"
  sleep 0.2
done
echo "demo: email-service says: $(grep "Sending email to: $name" "$dir/shippy-email-service.log")"
echo "demo: OK"
