#!/usr/bin/env bash
# The wire contract of proto/: buf (pinned in this tools module, which keeps
# its dependencies out of shippy's go.mod) refuses changes that break the
# protobuf wire format or the JSON names (rule set WIRE_JSON, proto/buf.yaml)
# of what was released.
#
#   bash tools/buf/breaking.sh            proto/ against proto/released.txtpb, the
#                                         schema as last released (works on any clone),
#                                         and against BUF_AGAINST_REF (default origin/main,
#                                         else main) when that ref exists here
#   bash tools/buf/breaking.sh --release  record proto/ as released (rewrites the baseline)
#
# A deliberate break is a new baseline, made with --release in the same change
# and reviewed as such: when the baseline differs from the ref's, the ref is
# not compared.
set -euo pipefail
export GOTOOLCHAIN=auto

tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$tools_dir/../.."
baseline=proto/released.txtpb

# Builds buf on the first run (about two minutes), then comes from the cache.
buf=$(go -C "$tools_dir" tool -n buf)

if [[ ${1:-} == --release ]]; then
	"$buf" build proto --exclude-source-info -o "$baseline"
	echo "proto-release: wrote $baseline; commit it with the change"
	exit 0
fi
if [[ $# -gt 0 ]]; then
	echo "usage: $0 [--release]" >&2
	exit 2
fi

echo "proto-breaking: proto/ against $baseline"
"$buf" breaking proto --against "$baseline"

ref=${BUF_AGAINST_REF:-}
if [[ -z $ref ]]; then
	for r in origin/main main; do
		if git rev-parse -q --verify "$r^{commit}" >/dev/null 2>&1; then
			ref=$r
			break
		fi
	done
fi
if [[ -z $ref ]]; then
	echo "proto-breaking: no origin/main or main here; compared with $baseline only"
	exit 0
fi
if ! git rev-parse -q --verify "$ref^{commit}" >/dev/null 2>&1; then
	echo "proto-breaking: BUF_AGAINST_REF=$ref is not a commit here" >&2
	exit 2
fi
if ! git show "$ref:$baseline" 2>/dev/null | cmp -s - "$baseline"; then
	echo "proto-breaking: $baseline differs from $ref's: a new release baseline, so not compared with $ref"
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive "$ref" proto | tar -x -C "$tmp"
echo "proto-breaking: proto/ against $ref"
"$buf" breaking proto --against "$tmp/proto"
