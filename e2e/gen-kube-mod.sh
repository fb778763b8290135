#!/usr/bin/env bash
# Regenerates e2e/tools/kube/go.mod for a given k8s.io/kubernetes version.
#
# k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/apiserver, ...) at the
# non-existent version v0.0.0 and resolves them with `replace ... => ./staging/...`. Replace
# directives only count in the main module, so our wrapper has to carry its own replace block
# that points each staging module at its published v0.N.M. The list is read from the real
# go.mod served by the module proxy, so nothing is guessed.
#
# Usage: e2e/gen-kube-mod.sh 1.37.2     (then commit e2e/tools/kube/go.mod and go.sum)
set -euo pipefail
KVER=${1:?usage: $0 <kubernetes version, e.g. 1.37.2>}
KVER=${KVER#v}
cd "$(dirname "$0")/tools/kube"
export GOFLAGS=-mod=mod
rm -f go.mod go.sum
go mod init capi-calico-webhook.invalid/e2e/tools/kube >/dev/null 2>&1
KMOD=$(go mod download -json "k8s.io/kubernetes@v$KVER" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[ -n "$KMOD" ] || { echo "k8s.io/kubernetes@v$KVER is not served" >&2; exit 1; }
n=0
for m in $(sed -n 's|^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*|\1|p' "$KMOD"); do
  go mod edit -replace="$m=$m@v0.${KVER#1.}"
  n=$((n + 1))
done
echo "added $n staging replaces (v0.${KVER#1.})"
# godebug lines only count in the main module: copy them.
grep '^godebug' "$KMOD" | while read -r _ kv; do go mod edit -godebug="$kv"; done
# Keep the go line k8s declares (no newer toolchain needed).
go mod edit -go="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$KMOD")"
go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$KVER" "k8s.io/kubernetes/cmd/kubectl@v$KVER" \
  "k8s.io/kubernetes/cmd/kube-controller-manager@v$KVER"
go mod tidy
echo "done: $(pwd)/go.mod"
