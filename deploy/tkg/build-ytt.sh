#!/usr/bin/env bash
# Builds the ytt version pinned in deploy/tkg/tools/go.mod into bin/ytt (git-ignored), for tests/tkg_overlay.rs.
# Does nothing when bin/ytt already is that version. Needs the go command (1.25+) and the Go module proxy.
#
#   deploy/tkg/build-ytt.sh            # then: cargo test --test tkg_overlay   (or YTT_BIN=/path/to/ytt)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
tools="$root/deploy/tkg/tools"
out="$root/bin/ytt"
version=$(awk '{ for (i = 1; i < NF; i++) if ($i == "carvel.dev/ytt") { print $(i + 1); exit } }' "$tools/go.mod")
[ -n "$version" ] || { echo "build-ytt.sh: no carvel.dev/ytt requirement in $tools/go.mod" >&2; exit 1; }

if [ -x "$out" ] && [ "$("$out" version 2>/dev/null | head -n 1)" = "ytt version ${version#v}" ]; then
  echo "build-ytt.sh: $out is already ytt ${version#v}" >&2
  exit 0
fi

command -v go >/dev/null || { echo "build-ytt.sh: 'go' is not on PATH (Go 1.25 or later builds ytt)" >&2; exit 1; }
mkdir -p "$root/bin"
cd "$tools"
# go.sum pins every module's hash, so the build verifies against it (-mod=readonly: never rewrite go.mod/go.sum).
# The checksum database is not consulted for modules go.sum already lists; carvel.dev/ytt itself had no answer from
# the checksum database through this machine's proxy when go.sum was made (GONOSUMDB=carvel.dev for `go get` only).
GOFLAGS=-mod=readonly nice -n 10 go build -trimpath \
  -ldflags "-X carvel.dev/ytt/pkg/version.Version=${version#v}" \
  -o "$out.tmp" carvel.dev/ytt/cmd/ytt
mv "$out.tmp" "$out"
echo "build-ytt.sh: built $("$out" version | head -n 1) into $out" >&2
