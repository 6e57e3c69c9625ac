#!/usr/bin/env sh
# make compose-env: write the secrets docker-compose.yml asks for into .env
# (which docker compose, docker-compose and podman-compose read from the
# project folder): JWT_SECRET and the NATS password of each program's user
# (deploy/nats/shippy.conf). Each is 32 random bytes, hex; a value already in
# .env, or exported in the shell, is kept, so running it again changes
# nothing. .env is mode 0600 and ignored by git. The NATS passwords start
# with "nats-": nats-server 2.10 parses a $VARIABLE's value as a config
# value, and bare hex such as 4e45... reads as a number there and stops it.
set -eu
cd "$(dirname "$0")/.."
env_file=${COMPOSE_ENV_FILE:-.env}

umask 077
touch "$env_file"
chmod 600 "$env_file"
for name in JWT_SECRET NATS_USER_SERVICE_PASSWORD NATS_EMAIL_SERVICE_PASSWORD NATS_CLI_PASSWORD NATS_OPS_PASSWORD; do
  if grep -q "^$name=" "$env_file"; then
    continue
  fi
  value=$(printenv "$name" || true)
  if [ -z "$value" ]; then
    value=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
    case $name in NATS_*) value=nats-$value ;; esac
  fi
  printf '%s=%s\n' "$name" "$value" >>"$env_file"
  echo "compose-env: $name written to $env_file"
done
