# shellcheck shell=bash
# Sourced by container-bases.sh and compose-test.sh: podman as the container
# engine on a machine with no Docker engine, set up the way it works on both
# variants of this machine kind (cgroup v2, and hybrid cgroups where crun
# refuses every container). Nothing here runs on its own.

podman_log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
podman_die() { podman_log "$*"; exit 1; }

# podman_install [package...]: installs podman (with runc) and the given
# Debian packages, whichever are missing.
podman_install() {
  local missing=() pkg
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || podman_die "missing ${missing[*]}, and no apt-get to install them"
  podman_log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# podman_configure writes /etc/containers/containers.conf, unless an
# administrator wrote one of their own:
# - default_ulimits = []: podman's default ulimits cannot be set in this
#   sandbox ("error setting rlimit type 7: operation not permitted");
# - runtime = "runc": crun refuses cgroups in hybrid mode, runc runs on both;
# - no systemd here: cgroups, events and logs go to files.
podman_configure() {
  local conf=/etc/containers/containers.conf marker='# written by shippy scripts/podman-env.sh'
  if [ -e "$conf" ] && ! grep -qF "$marker" "$conf"; then
    if ! grep -q 'default_ulimits' "$conf" || ! grep -q 'runtime *= *"runc"' "$conf"; then
      podman_log "warning: $conf is not ours and may lack default_ulimits = [] and runtime = \"runc\""
    fi
    return 0
  fi
  mkdir -p /etc/containers
  cat >"$conf" <<EOF
$marker
[containers]
default_ulimits = []
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
}

# podman_service_start DIR: serves podman's Docker-compatible API on
# DIR/podman.sock (a private socket, not /run/docker.sock) and exports
# DOCKER_HOST for docker-compose. podman_service_stop ends it.
PODMAN_SERVICE_PID=
podman_service_start() {
  local dir=$1 sock=$1/podman.sock deadline=$((SECONDS + 30))
  podman system service --time=0 "unix://$sock" >"$dir/podman-service.log" 2>&1 &
  PODMAN_SERVICE_PID=$!
  export DOCKER_HOST="unix://$sock"
  until curl -fsS --unix-socket "$sock" http://podman/_ping >/dev/null 2>&1; do
    if ! kill -0 "$PODMAN_SERVICE_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      cat "$dir/podman-service.log" >&2
      podman_die "podman system service did not answer on $sock"
    fi
    sleep 0.2
  done
}

podman_service_stop() {
  [ -n "$PODMAN_SERVICE_PID" ] || return 0
  kill -TERM "$PODMAN_SERVICE_PID" 2>/dev/null || true
  wait "$PODMAN_SERVICE_PID" 2>/dev/null || true
  PODMAN_SERVICE_PID=
}
