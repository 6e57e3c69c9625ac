#!/usr/bin/env bash
# Offline known-vulnerability check for the shippy module.
#
# govulncheck (pinned in this tools module) scans the root module against a
# database built locally from the golang.org/x/vulndb module, which the Go
# module proxy serves: nothing beyond the module proxy is contacted.
# The database is built once per vulndb version into a cache directory.
#
# Usage: bash tools/vulncheck/run.sh [packages...]   (default ./...)
# Exits 0 when no vulnerability is reachable from shippy's code, non-zero otherwise.
set -euo pipefail

# go.mod files name `toolchain go1.27.3`; the machine default may be
# GOTOOLCHAIN=local, which would scan against an older, vulnerable stdlib.
export GOTOOLCHAIN=auto

tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root_dir=$(cd "$tools_dir/../.." && pwd)

# Resolve (and download on a clean clone) the vulndb module pinned in this tools module.
vulndb_json=$(go -C "$tools_dir" mod download -json golang.org/x/vulndb)
vulndb_version=$(sed -n 's/^[[:space:]]*"Version": "\(.*\)",\{0,1\}$/\1/p' <<<"$vulndb_json" | head -n1)
vulndb_dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$vulndb_json" | head -n1)
if [[ -z $vulndb_version || -z $vulndb_dir || ! -d $vulndb_dir/data/osv ]]; then
	echo "vulncheck: cannot locate golang.org/x/vulndb data/osv" >&2
	exit 2
fi

db_dir="${XDG_CACHE_HOME:-$HOME/.cache}/shippy/vulndb-$vulndb_version"
if [[ ! -f $db_dir/index/db.json ]]; then
	echo "vulncheck: building offline database from golang.org/x/vulndb@$vulndb_version (first run only)" >&2
	mkdir -p "$(dirname "$db_dir")"
	tmp_db=$(mktemp -d "$db_dir.tmp.XXXXXX")
	trap 'rm -rf "$tmp_db"' EXIT
	# indexdb refuses an existing output directory, so write into a fresh subdirectory
	# and move it into place atomically: a concurrent or interrupted run never sees half a database.
	go -C "$tools_dir" tool indexdb -vulns "$vulndb_dir/data/osv" -out "$tmp_db/db"
	rm -rf "$db_dir"
	mv "$tmp_db/db" "$db_dir"
	rm -rf "$tmp_db"
	trap - EXIT
fi

go_version=$(go -C "$root_dir" env GOVERSION)
out=$(mktemp)
trap 'rm -f "$out"' EXIT

if [[ $# -eq 0 ]]; then
	set -- ./...
fi
status=0
go -C "$tools_dir" tool govulncheck -db "file://$db_dir" -C "$root_dir" "$@" >"$out" 2>&1 || status=$?
cat "$out"

# govulncheck exits 3 when reachable vulnerabilities are found; other non-zero codes are errors.
# The summary paragraph wraps at arbitrary words: read it as one line.
flat=$(tr '\n' ' ' <"$out")
count() { sed -n "s/.*$1.*/\\1/p" <<<"$flat" | head -n1; }
reachable=$(count 'Your code is affected by \([0-9][0-9]*\) vulnerabilit')
imported=$(count 'found \([0-9][0-9]*\) vulnerabilit[a-z]* in packages you import')
required=$(count ' \([0-9][0-9]*\) vulnerabilit[a-z]* in modules you require')
summary="reachable=${reachable:-0} imported-not-called=${imported:-0} required-not-imported=${required:-0} go=$go_version vulndb=$vulndb_version"
case $status in
0) echo "vulncheck: OK, no reachable vulnerabilities ($summary)" ;;
3) echo "vulncheck: FAIL, reachable vulnerabilities found ($summary)" ;;
*) echo "vulncheck: ERROR, govulncheck exited $status ($summary)" ;;
esac
exit "$status"
