#!/usr/bin/env bash
# Profiles of the event path (issue 14.2/14.3): CPU, block and mutex profiles
# of the outbox relay (PostgreSQL -> JetStream) and of pair 4 (go-micro event
# -> JetStream -> subscriber), all in the benchmark process (it hosts the
# nats-server too), printed as pprof's top lists. Profiles stay in $out.
# Needs TEST_DATABASE_URL. Usage: bash bench/profile-events.sh [outdir]
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
: "${TEST_DATABASE_URL:?set TEST_DATABASE_URL (PostgreSQL)}"
out=${1:-$(mktemp -d)}
go test -c -o "$out/bench.test" ./bench/
for b in 'OutboxRelay/async-batch$' 'Events/jetstream'; do
	name=$(echo "$b" | tr -c 'a-zA-Z0-9\n' '_')
	(cd bench && "$out/bench.test" -test.run '^$' -test.bench "$b" -test.benchtime=3x \
		-test.cpuprofile "$out/$name.cpu" -test.blockprofile "$out/$name.block" \
		-test.mutexprofile "$out/$name.mutex" | grep -E '^(ratio|relay)')
	for kind in cpu block mutex; do
		echo "== $b: $kind (top, cumulative)"
		go tool pprof -top -cum -nodecount=25 "$out/bench.test" "$out/$name.$kind" 2>/dev/null | sed -n '1,32p'
	done
done
echo "profiles in $out"
