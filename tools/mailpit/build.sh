#!/usr/bin/env bash
# tools/mailpit/build.sh OUT_DIR: builds Mailpit (github.com/axllent/mailpit,
# the version this module pins in go.mod) into OUT_DIR/mailpit, a static
# binary with its web UI, for the stand-in image axllent/mailpit:<version>
# that scripts/container-bases.sh makes where the real one cannot be pulled.
#
# The Go module holds the UI's sources (server/ui-src) but not the bundle the
# binary embeds (server/ui/dist, made with npm for each release): without it
# the inbox page is blank. So the bundle is made here as Mailpit's
# `npm run build` makes it (esbuild, esbuild.config.mjs), with two
# differences, because the npm registry here serves only some versions:
# - packages come from package.json's ranges, not Mailpit's lock, which
#   names versions that are not served;
# - the API documentation page (docs.js, on rapidoc ^12, not served) is
#   left out: the inbox, messages and the HTTP API are whole; /api/v1/ in a
#   browser shows no docs.
# Needs Go, Node.js 18 or newer and npm. 73 s on a fresh 2-core CI machine
# (npm install, the bundle and go build), 19 s with Go's build cache warm.
set -euo pipefail
export GOTOOLCHAIN=auto
out=${1:?usage: build.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

json=$(go -C "$tools_dir" mod download -json github.com/axllent/mailpit)
field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}$/\1/p" <<<"$json" | head -n1; }
version=$(field Version)
src=$(field Dir)
[[ -n $version && -d $src/server/ui-src ]] || { echo "mailpit build: no module source for github.com/axllent/mailpit" >&2; exit 1; }

work=$(mktemp -d /tmp/shippy-mailpit.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r "$src" "$work/src"
chmod -R u+w "$work/src"
cd "$work/src"

# Only what the bundle needs: the UI's dependencies and the four build
# packages (not eslint, prettier, playwright, jsdom), without rapidoc.
node -e '
const fs = require("fs");
const p = JSON.parse(fs.readFileSync("package.json"));
const build = ["esbuild", "esbuild-plugin-vue-next", "esbuild-sass-plugin", "@vue/compiler-sfc"];
delete p.dependencies.rapidoc;
p.devDependencies = Object.fromEntries(Object.entries(p.devDependencies).filter(([k]) => build.includes(k)));
delete p.overrides;
fs.writeFileSync("package.json", JSON.stringify(p, null, 2));
'
rm -f package-lock.json
sed -i 's#entryPoints: \["server/ui-src/app.js", "server/ui-src/docs.js"\]#entryPoints: ["server/ui-src/app.js"]#' esbuild.config.mjs
grep -q 'entryPoints: \["server/ui-src/app.js"\]' esbuild.config.mjs \
  || { echo "mailpit build: esbuild.config.mjs of $version is not as expected (entryPoints)" >&2; exit 1; }
npm install --no-audit --no-fund --loglevel=error >"$work/npm.log" 2>&1 \
  || { tail -n 30 "$work/npm.log" >&2; echo "mailpit build: npm install failed" >&2; exit 1; }
MINIFY=true node esbuild.config.mjs >>"$work/npm.log" 2>&1 \
  || { tail -n 30 "$work/npm.log" >&2; echo "mailpit build: the UI bundle failed" >&2; exit 1; }
[[ -s server/ui/dist/app.js && -s server/ui/dist/app.css ]] || { echo "mailpit build: no server/ui/dist/app.js" >&2; exit 1; }

CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
  -ldflags "-s -w -X github.com/axllent/mailpit/config.Version=$version" -o "$out/mailpit" .
echo "mailpit $version with its web UI: $out/mailpit"
