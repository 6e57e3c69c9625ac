#!/usr/bin/env bash
# make container-bases: local stand-ins for the base images that
# docker-compose.yml and Dockerfile name, for machines that cannot pull from
# an image registry (CI here). Each is built only when its name is absent
# locally: where the real image was pulled, nothing is replaced. Every
# stand-in is made from what such a machine reaches (Debian packages, Go
# modules, the machine's own Go toolchain and CA bundle) and carries the label
# shippy.stand-in saying so. The parts are in scripts/container-bases/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/podman-env.sh
source scripts/podman-env.sh

parts=scripts/container-bases
# The newest nats-server of the 2.10 line that the Go module proxy serves.
NATS_SERVER_VERSION=${NATS_SERVER_VERSION:-v2.10.29}
# The Go toolchain go.mod asks for; the golang stand-in carries it.
GO_VERSION=$(sed -n 's/^toolchain go//p' go.mod)
DEBIAN_BASE=localhost/shippy-bases/debian:bookworm-minbase

log() { printf 'container-bases: %s\n' "$*"; }
die() { printf 'container-bases: %s\n' "$*" >&2; exit 1; }

work=
cleanup() {
  if podman image exists "$DEBIAN_BASE" 2>/dev/null; then
    podman untag "$DEBIAN_BASE" >/dev/null 2>&1 || true
  fi
  if [ -n "$work" ]; then
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
  fi
}

# named_images prints every image the compose file and the Dockerfiles start
# from (build stages and scratch excluded).
named_images() {
  local f
  {
    sed -nE "s/^[[:space:]]+image:[[:space:]]*[\"']?([^\"' ]+).*/\1/p" docker-compose.yml
    for f in Dockerfile shippy-*/Dockerfile; do
      [ -f "$f" ] || continue
      awk 'toupper($1) == "FROM" {
             i = 2; while ($i ~ /^--/) i++
             img = $i
             for (j = i + 1; j < NF; j++) if (toupper($j) == "AS") stage[tolower($(j + 1))] = 1
             if (!(tolower(img) in stage) && img != "scratch") print img
           }' "$f"
    done
  } | sort -u
}

# full_name spells a short name as the registry does: postgres:15-bookworm is
# docker.io/library/postgres:15-bookworm, the name Docker's API looks up.
full_name() {
  local name=$1 first=${1%%/*}
  if [[ $name != */* ]]; then
    echo "docker.io/library/$name"
  elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then
    echo "docker.io/$name"
  else
    echo "$name"
  fi
}

# build NAME CONTAINERFILE CONTEXT [podman build options...]
build() {
  local name=$1 file=$2 ctx=$3 started=$SECONDS
  shift 3
  if ! podman build --pull=never --layers=false -f "$file" -t "$(full_name "$name")" \
         --label "shippy.stand-in=$name, built by scripts/container-bases.sh" \
         "$@" "$ctx" >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    die "building the stand-in for $name failed"
  fi
  log "$name: built in $((SECONDS - started))s, $(podman image inspect --format '{{.Size}}' "$(full_name "$name")" | awk '{printf "%.0f MB", $1 / 1e6}')"
}

# check NAME WANT COMMAND...: the stand-in, run with COMMAND, prints WANT;
# otherwise it is removed (so that the next run builds it again) and the
# script fails.
check() {
  local name=$1 want=$2 out
  shift 2
  out=$(podman run --rm "$(full_name "$name")" "$@" 2>&1) || true
  if ! grep -qF -- "$want" <<<"$out"; then
    podman rmi "$(full_name "$name")" >/dev/null 2>&1 || true
    die "$name: the stand-in, run with '$*', printed '$out'; want '$want'"
  fi
}

# apt_mirror PATH prints the machine's Debian mirror for PATH (debian or
# debian-security), from its apt sources.
apt_mirror() {
  local url
  url=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
          | grep -v '^[[:space:]]*#' | grep -oE "https?://[^ ]+/$1/?( |\$)" | head -n 1 | tr -d ' ') || true
  echo "${url:-http://deb.debian.org/$1}"
}

# debian_base imports a minimal Debian bookworm (debootstrap minbase from the
# machine's own mirror) once, for the postgres and golang stand-ins.
debian_base() {
  podman image exists "$DEBIAN_BASE" && return 0
  local root=$work/bookworm mirror started=$SECONDS
  mirror=${DEBIAN_MIRROR:-$(apt_mirror debian)}
  if ! debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 40 "$work/debootstrap.log" >&2
    die "debootstrap bookworm from $mirror failed"
  fi
  cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${DEBIAN_SECURITY_MIRROR:-$(apt_mirror debian-security)} bookworm-security main
EOF
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root/etc/hostname"
  : >"$root/etc/resolv.conf"
  tar -C "$root" -c . | podman import --quiet --change 'CMD ["bash"]' - "$DEBIAN_BASE" >/dev/null
  rm -rf "$root"
  log "debian bookworm minbase (from $mirror): $((SECONDS - started))s"
}

build_postgres() {
  local name=$1 major=${1#*:}
  major=${major%%-*}
  debian_base
  build "$name" "$parts/postgres.Containerfile" "$parts" --build-arg BASE="$DEBIAN_BASE"
  check "$name" "(PostgreSQL) $major." postgres --version
  check_postgres "$name"
}

# check_postgres NAME: the stand-in creates the user, password and database
# it is given, answers pg_isready, and takes a password login over TCP.
check_postgres() {
  local name=$1 ctr=shippy-bases-check-$$ deadline=$((SECONDS + 60))
  podman run -d --name "$ctr" -e POSTGRES_USER=u -e POSTGRES_PASSWORD=p -e POSTGRES_DB=d \
    "$(full_name "$name")" >/dev/null
  until podman exec -e PGPASSWORD=p "$ctr" psql -h 127.0.0.1 -U u -d d -tAc 'SELECT 1' 2>/dev/null | grep -qx 1 \
        && podman exec "$ctr" pg_isready -q -U u -d d; do
    if [ $SECONDS -ge $deadline ]; then
      podman logs "$ctr" >&2 || true
      podman rm -f -v "$ctr" >/dev/null 2>&1 || true
      podman rmi "$(full_name "$name")" >/dev/null 2>&1 || true
      die "$name: the stand-in did not accept u/p on database d within 60s"
    fi
    sleep 0.5
  done
  podman rm -f -v "$ctr" >/dev/null
}

build_golang() {
  local name=$1 tag=${1#*:} goroot ctx=$work/golang
  [[ $GO_VERSION == "${tag%%-*}".* ]] || die "$name names Go ${tag%%-*}, but go.mod's toolchain is go$GO_VERSION"
  goroot=$(GOTOOLCHAIN="go$GO_VERSION" go env GOROOT) || die "cannot get the go$GO_VERSION toolchain"
  debian_base
  mkdir -p "$ctx"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
  build "$name" "$parts/golang.Containerfile" "$ctx" --build-arg BASE="$DEBIAN_BASE" \
    --build-arg GOLANG_VERSION="$GO_VERSION" --volume "$goroot:/goroot:ro"
  check "$name" "go version go$GO_VERSION " go version
}

build_nats() {
  local name=$1 tag=${1#*:} ctx=$work/nats deb
  [[ ${NATS_SERVER_VERSION#v} == "${tag%%-*}".* ]] || die "$name names NATS ${tag%%-*}, but NATS_SERVER_VERSION is $NATS_SERVER_VERSION"
  mkdir -p "$ctx/etc/nats" "$ctx/deb"
  GOTOOLCHAIN="go$GO_VERSION" GOBIN="$ctx" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
    go install -trimpath -ldflags='-s -w' "github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION" \
    || die "cannot build nats-server $NATS_SERVER_VERSION"
  # Debian's static busybox gives the shell and the wget the health check uses.
  (cd "$ctx/deb" && { apt-get download busybox-static >/dev/null 2>&1 \
                      || { apt-get update -qq && apt-get download busybox-static >/dev/null 2>&1; }; }) \
    || die "cannot download Debian's busybox-static"
  deb=$(ls "$ctx"/deb/busybox-static_*.deb)
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$ctx/deb" ./bin/busybox
  mv "$ctx/deb/bin/busybox" "$ctx/busybox"
  cp "$parts/nats-server.conf" "$ctx/etc/nats/"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$ctx/etc/passwd"
  printf 'root:x:0:root\nnobody:x:65534:\n' >"$ctx/etc/group"
  cp "$parts/nats-entrypoint.sh" "$ctx/"
  build "$name" "$parts/nats.Containerfile" "$ctx"
  check "$name" "nats-server: $NATS_SERVER_VERSION" --version
  check "$name" "BusyBox" wget --help
}

build_distroless() {
  local name=$1 root=$work/distroless/rootfs
  mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/root" "$work/distroless/home/nonroot"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  printf 'root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n' >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  if [ -d /usr/share/zoneinfo ]; then
    mkdir -p "$root/usr/share"
    cp -a /usr/share/zoneinfo "$root/usr/share/"
  fi
  chmod 1777 "$root/tmp"
  chmod 700 "$root/root"
  build "$name" "$parts/distroless.Containerfile" "$work/distroless"
  if podman run --rm --entrypoint /bin/sh "$(full_name "$name")" -c true >/dev/null 2>&1; then
    podman rmi "$(full_name "$name")" >/dev/null 2>&1 || true
    die "$name: the stand-in has a shell"
  fi
}

# build_mailpit NAME: Mailpit of the version tools/mailpit/go.mod pins (the
# tag must name it), built with its web UI by tools/mailpit/build.sh, on
# scratch with CA certificates and /tmp.
build_mailpit() {
  local name=$1 tag=${1#*:} ctx=$work/mailpit pinned
  pinned=$(sed -nE 's/^[[:space:]]*github.com\/axllent\/mailpit (v[^ ]+).*/\1/p' tools/mailpit/go.mod)
  [ "$tag" = "$pinned" ] || die "$name names Mailpit $tag, but tools/mailpit/go.mod pins ${pinned:-none}"
  command -v node >/dev/null && command -v npm >/dev/null || podman_install nodejs npm
  mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp"
  chmod 1777 "$ctx/rootfs/tmp"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
  local started=$SECONDS
  bash tools/mailpit/build.sh "$ctx" >"$work/mailpit-build.log" 2>&1 \
    || { tail -n 40 "$work/mailpit-build.log" >&2; die "building Mailpit $tag failed"; }
  log "mailpit $tag with its web UI (npm, go build): $((SECONDS - started))s"
  build "$name" "$parts/mailpit.Containerfile" "$ctx"
  check "$name" "mailpit $tag" version
}

main() {
  local name started=$SECONDS images
  podman_install debootstrap
  podman_configure
  work=$(mktemp -d /tmp/shippy-bases.XXXXXX)
  trap cleanup EXIT
  images=$(named_images)
  [ -n "$images" ] || die "docker-compose.yml and the Dockerfiles name no image"
  for name in $images; do
    if podman image exists "$(full_name "$name")"; then
      log "$name: present, kept"
      continue
    fi
    case $name in
      postgres:*-bookworm) build_postgres "$name" ;;
      golang:*-bookworm) build_golang "$name" ;;
      nats:*-alpine) build_nats "$name" ;;
      gcr.io/distroless/static-debian12:nonroot) build_distroless "$name" ;;
      axllent/mailpit:v*) build_mailpit "$name" ;;
      *) die "$name is absent and has no stand-in here: add one to scripts/container-bases.sh" ;;
    esac
  done
  log "done in $((SECONDS - started))s"
}

main "$@"
