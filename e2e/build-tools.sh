#!/usr/bin/env bash
# Builds the end-to-end control plane from Go modules and extracts the Cluster API CRDs.
#
#   bin/e2e/kube-<k8s version>/{kube-apiserver,kubectl,kube-controller-manager}
#                                                          from e2e/tools/kube (k8s.io/kubernetes);
#                                                          the controller manager runs only its garbage
#                                                          collector in the e2e suite
#   bin/e2e/etcd-<etcd version>/etcd                       from e2e/tools/etcd (go.etcd.io/etcd/server/v3)
#   bin/e2e/capi-crds-<capi version>/*.yaml                from e2e/tools/capi (sigs.k8s.io/cluster-api)
#
# The versions come from the wrapper modules' go.mod files (the single source of truth; the Rust
# harness reads the same files). Each output is cached by version: a folder that is already
# complete is left alone, so a second run costs a few `go` invocations and no compiling.
# Needs only Go (>= the go line of the wrapper modules) and the Go module proxy.
#
# Environment:
#   E2E_BIN_ROOT   output root (default: <repo>/bin/e2e)
#   E2E_FORCE=1    rebuild even if the outputs exist
#   E2E_NICE       niceness of the go builds (default 10; the machines are shared)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
TOOLS="$REPO/e2e/tools"
OUT=${E2E_BIN_ROOT:-$REPO/bin/e2e}
NICE=${E2E_NICE:-10}
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local}

command -v go >/dev/null || { echo "build-tools: 'go' is not on PATH" >&2; exit 1; }
mkdir -p "$OUT"

# Version of a module as required by a wrapper go.mod.
modver() { (cd "$TOOLS/$1" && go list -m -f '{{.Version}}' "$2"); }
now() { date +%s; }
log() { echo "build-tools: $*"; }

T0=$(now)
KVER=$(modver kube k8s.io/kubernetes)
EVER=$(modver etcd go.etcd.io/etcd/server/v3)
CVER=$(modver capi sigs.k8s.io/cluster-api)
log "versions: kubernetes $KVER, etcd $EVER, cluster-api $CVER; go $(go env GOVERSION); output $OUT"

# ---- kube-apiserver + kubectl + kube-controller-manager -------------------------------------
KDIR="$OUT/kube-$KVER"
KBINS="kube-apiserver kubectl kube-controller-manager"
have_all() { for b in $KBINS; do [ -x "$KDIR/$b" ] || return 1; done; }
if [ -z "${E2E_FORCE:-}" ] && have_all; then
  log "$KBINS $KVER: cached in $KDIR"
else
  t=$(now)
  log "building $KBINS $KVER (cold: 15-30 min on 2 cores) ..."
  V=${KVER#v}; MAJOR=${V%%.*}; MINOR=${V#*.}; MINOR=${MINOR%%.*}
  LDF="-s -w"
  # Same variables upstream's hack/lib/version.sh sets, for both version packages.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LDF="$LDF -X $pkg.gitVersion=$KVER -X $pkg.gitMajor=$MAJOR -X $pkg.gitMinor=$MINOR"
    LDF="$LDF -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  tmp="$KDIR.tmp.$$"; rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$TOOLS/kube" && nice -n "$NICE" go build -trimpath -buildvcs=false \
      -tags selinux,notest,grpcnotrace -ldflags "$LDF" -o "$tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl \
      k8s.io/kubernetes/cmd/kube-controller-manager)
  rm -rf "$KDIR"; mv "$tmp" "$KDIR"
  log "built $KBINS $KVER in $(( $(now) - t ))s"
fi

# ---- etcd -----------------------------------------------------------------------------------
EDIR="$OUT/etcd-$EVER"
if [ -z "${E2E_FORCE:-}" ] && [ -x "$EDIR/etcd" ]; then
  log "etcd $EVER: cached in $EDIR"
else
  t=$(now)
  log "building etcd $EVER ..."
  tmp="$EDIR.tmp.$$"; rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$TOOLS/etcd" && nice -n "$NICE" go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$EVER" -o "$tmp/etcd" \
      go.etcd.io/etcd/server/v3)
  rm -rf "$EDIR"; mv "$tmp" "$EDIR"
  log "built etcd $EVER in $(( $(now) - t ))s"
fi

# ---- Cluster API CRDs -------------------------------------------------------------------------
CDIR="$OUT/capi-crds-$CVER"
if [ -z "${E2E_FORCE:-}" ] && [ -f "$CDIR/.complete" ]; then
  log "cluster-api $CVER CRDs: cached in $CDIR"
else
  t=$(now)
  tmp="$CDIR.tmp.$$"; rm -rf "$tmp"; mkdir -p "$tmp"
  if SRC=$(cd "$TOOLS/capi" && go mod download sigs.k8s.io/cluster-api >/dev/null &&
           go list -m -f '{{.Dir}}' sigs.k8s.io/cluster-api) && [ -d "$SRC" ]; then
    # v1.14 keeps the core CRDs in core/config/...; through v1.13 they were in config/crd/bases.
    n=0
    for d in core/config/crd/bases config/crd/bases bootstrap/kubeadm/config/crd/bases \
             controlplane/kubeadm/config/crd/bases; do
      [ -d "$SRC/$d" ] || continue
      for f in "$SRC/$d"/*.yaml; do cp "$f" "$tmp/"; n=$((n + 1)); done
      chmod u+w "$tmp"/*.yaml  # the module cache is read-only
    done
    [ "$n" -gt 0 ] || { echo "build-tools: no CRDs found in $SRC" >&2; exit 1; }
    echo "sigs.k8s.io/cluster-api $CVER (module $SRC)" > "$tmp/.complete"
    log "extracted $n cluster-api $CVER CRDs in $(( $(now) - t ))s"
  else
    # Fallback when the module is not served: the fixture copy (CI has it beside the repo).
    FB=""
    for c in "$REPO/../shared/fixtures/capi-crds" /work/shared/fixtures/capi-crds; do
      [ -d "$c" ] && { FB=$c; break; }
    done
    [ -n "$FB" ] || { echo "build-tools: sigs.k8s.io/cluster-api $CVER not served and no fixture CRDs" >&2; exit 1; }
    find "$FB" -name '*.yaml' -exec cp {} "$tmp/" \;
    echo "fixture $FB (module not served)" > "$tmp/.complete"
    log "WARNING: module not served; copied CRDs from $FB"
  fi
  rm -rf "$CDIR"; mv "$tmp" "$CDIR"
fi

log "done in $(( $(now) - T0 ))s: $KDIR, $EDIR, $CDIR"
