#!/usr/bin/env bash
# make fuzz: run every Fuzz target in the module for the given time each
# (go test -fuzz takes one target per run). Seed corpora live in each
# package's testdata/fuzz/ and also run as plain tests in `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-30s}
found=0
while IFS= read -r file; do
  pkg=./$(dirname "$file")
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' "$file" | awk '{print $2}'); do
    found=$((found + 1))
    echo "=== fuzz $pkg $target for $fuzztime"
    go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$pkg"
  done
done < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' || true)
if [ "$found" -eq 0 ]; then echo "no fuzz targets found" >&2; exit 1; fi
echo "fuzz: $found targets ran for $fuzztime each"
