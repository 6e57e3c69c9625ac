#!/usr/bin/env bash
# make bench: every pair's benchmark once per BENCH_COUNT, the raw output in
# bench.out (for benchstat), then the ratio lines (higher is better).
# Needs TEST_DATABASE_URL (PostgreSQL); starts its own in-process NATS.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${BENCH_COUNT:-1}
out=${BENCH_OUT:-bench.out}
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
if [ -z "${TEST_DATABASE_URL:-}" ]; then
	echo "bench: TEST_DATABASE_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)" >&2
	exit 1
fi
go test -run '^$' -bench "${BENCH:-.}" -benchtime=1x -count "$count" -timeout "${BENCH_TIMEOUT:-30m}" ./bench/ | tee "$out"
echo
echo "== ratios (higher is better; targets in BENCH.md) =="
grep -E '^(ratio|tune|create-to-email|rss|built-in)' "$out" | sort -s -t= -k1,1
echo
echo "== latency: p50, p99 and the slowest call (max) =="
grep -E '^(stack|validate|soak-rpc|soak-cli):' "$out" || true
echo
echo "== Create to email, hop by hop (BenchmarkCreateToEmailStages) =="
grep -E '^stages:' "$out" || true
echo
echo "== scaling, capacity, the relay and memory growth =="
grep -E '^(scaling|capacity|relay|memgrowth):' "$out" || true
