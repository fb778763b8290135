#!/usr/bin/env bash
# Creates the webhook's certificates without cert-manager, for deploy/overlays/static-certs.
#
#   deploy/certs/make-certs.sh [options] [OUTDIR]
#
# OUTDIR defaults to deploy/overlays/static-certs/certs (git-ignored). It receives:
#   ca.crt, ca.key        a private CA for the webhook (ECDSA P-256); kept and reused on later runs
#   tls.crt, tls.key      the serving certificate for the Service's DNS names, signed by the CA
#   ca-bundle.crt         what the API server trusts: the CA, plus the previous CA after --rotate-ca
#   kustomization.yaml    a kustomize Component: a secretGenerator for the Secret capi-calico-webhook-tls
#   cabundle-patch.yaml   the patch that fills clientConfig.caBundle in both webhook configurations
# then: kubectl apply -k deploy/overlays/static-certs. With another OUTDIR, list OUTDIR under `components:` of an
# overlay of your own (next to `resources: [.../deploy/base]`) and apply that overlay; the script prints it.
#
# The certificate is for the Service capi-calico-webhook in the namespace capi-calico-system, the names deploy/ uses
# (Secret capi-calico-webhook-tls, the webhooks' clientConfig). They are fixed here on purpose: changing them means
# changing those manifests too.
#
# Options:
#   --days N          validity of the serving certificate in days (default 365)
#   --ca-days N       validity of a new CA in days (default 3650)
#   --rotate-ca       make a new CA even if OUTDIR has one; the old CA stays in ca-bundle.crt (as ca-previous.crt)
#                     so that Pods still serving the old certificate are trusted until they reload
#
# Run again before the serving certificate expires: the CA is reused, so caBundle does not change and the running
# Pods pick up the new pair from the updated Secret without a restart. Needs openssl (1.1.1 or 3.x) and base64.
set -euo pipefail

days=365
ca_days=3650
rotate_ca=0
# Fixed: the names in deploy/base (Service, Secret, Deployment volume, webhook clientConfig).
namespace=capi-calico-system
service=capi-calico-webhook
outdir=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }
die() { echo "make-certs.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --days) [ $# -ge 2 ] || die "--days needs a value"; days=$2; shift 2 ;;
    --ca-days) [ $# -ge 2 ] || die "--ca-days needs a value"; ca_days=$2; shift 2 ;;
    --rotate-ca) rotate_ca=1; shift ;;
    --namespace|--service)
      die "$1 is not supported: the manifests in deploy/ fix the Service $service in $namespace" ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$outdir" ] || die "only one OUTDIR"; outdir=$1; shift ;;
  esac
done

case "$days$ca_days" in *[!0-9]*|"") die "--days and --ca-days take a number of days" ;; esac
command -v openssl >/dev/null || die "openssl not found"

# Physical paths (pwd -P): kustomize resolves "../" on the file system, so the relative paths printed at the end must
# be computed without symlinks.
start_dir=$(pwd -P)
deploy_dir=$(cd "$(dirname "$0")/.." && pwd -P)
default_outdir="$deploy_dir/overlays/static-certs/certs"
if [ -z "$outdir" ]; then
  outdir=$default_outdir
fi
mkdir -p "$outdir"
cd "$outdir"
outdir=$(pwd -P)
umask 077

svc_dns="$service.$namespace.svc"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

serial() { echo "0x7$(openssl rand -hex 15)"; }

# relpath FROM TO: TO relative to the directory FROM; both absolute, without symlinks, "." or ".." parts.
relpath() {
  local from=$1 to=$2 up="" rest
  while [ "$from" != / ] && [ "$to" != "$from" ] && [ "${to#"$from"/}" = "$to" ]; do
    from=$(dirname "$from")
    up="../$up"
  done
  if [ "$to" = "$from" ]; then rest=""
  elif [ "$from" = / ]; then rest=${to#/}
  else rest=${to#"$from"/}
  fi
  rest="$up$rest"
  rest=${rest%/}
  echo "${rest:-.}"
}

if [ "$rotate_ca" = 1 ] && [ -f ca.crt ]; then
  cp ca.crt ca-previous.crt
  rm -f ca.key ca.crt
fi
if [ ! -f ca.crt ] || [ ! -f ca.key ]; then
  echo "make-certs.sh: creating a new CA in $outdir" >&2
  openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca.key"
  openssl req -x509 -new -sha256 -key "$work/ca.key" -days "$ca_days" -set_serial "$(serial)" \
    -subj "/CN=$service-ca" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$work/ca.crt"
  mv "$work/ca.key" ca.key
  mv "$work/ca.crt" ca.crt
else
  echo "make-certs.sh: reusing the CA in $outdir (caBundle unchanged)" >&2
fi

openssl ecparam -name prime256v1 -genkey -noout -out "$work/tls.key"
openssl req -new -sha256 -key "$work/tls.key" -subj "/CN=$svc_dns" -out "$work/tls.csr"
cat > "$work/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=DNS:$svc_dns,DNS:$svc_dns.cluster.local
EXT
openssl x509 -req -sha256 -in "$work/tls.csr" -CA ca.crt -CAkey ca.key -set_serial "$(serial)" \
  -days "$days" -extfile "$work/ext.cnf" -out "$work/tls.crt" 2>/dev/null
openssl verify -CAfile ca.crt "$work/tls.crt" >/dev/null
mv "$work/tls.key" tls.key
mv "$work/tls.crt" tls.crt

if [ -f ca-previous.crt ]; then
  cat ca.crt ca-previous.crt > ca-bundle.crt
else
  cat ca.crt > ca-bundle.crt
fi
ca_bundle=$(base64 < ca-bundle.crt | tr -d '\n')

umask 022
cat > kustomization.yaml <<KUST
# Generated by deploy/certs/make-certs.sh; do not edit, run the script again.
apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component

secretGenerator:
  - name: $service-tls
    namespace: $namespace
    type: kubernetes.io/tls
    files:
      - tls.crt
      - tls.key
      - ca.crt
    options:
      # Same Secret name on every run: the Secret is updated in place and the running Pods reload the new pair
      # (no rollout needed, no orphaned Secrets).
      disableNameSuffixHash: true

patches:
  - path: cabundle-patch.yaml
KUST
cat > cabundle-patch.yaml <<PATCH
# Generated by deploy/certs/make-certs.sh: the CA bundle the API server uses to verify the webhook.
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: capi-calico-webhook
webhooks:
  - name: mutate.capi-calico.io
    clientConfig:
      caBundle: $ca_bundle
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: capi-calico-webhook
webhooks:
  - name: validate.capi-calico.io
    clientConfig:
      caBundle: $ca_bundle
PATCH

not_after=$(openssl x509 -in tls.crt -noout -enddate | cut -d= -f2)
echo "make-certs.sh: serving certificate for $svc_dns (+ .cluster.local) valid until $not_after" >&2
if [ "$outdir" = "$default_outdir" ]; then
  echo "make-certs.sh: wrote $outdir; now: kubectl apply -k $(relpath "$start_dir" "$deploy_dir/overlays/static-certs")" >&2
else
  # deploy/overlays/static-certs only reads its ./certs: a Component elsewhere needs an overlay that lists it.
  # kustomize refuses absolute paths, hence paths relative to the suggested overlay folder.
  overlay="$start_dir/my-webhook"
  cat >&2 <<NEXT
make-certs.sh: wrote $outdir, a kustomize Component.
  deploy/overlays/static-certs does not read it (it reads only its ./certs). Use it from an overlay of your own:
  $(relpath "$start_dir" "$overlay")/kustomization.yaml, with your image (docs/deploy.md, step 1):
    apiVersion: kustomize.config.k8s.io/v1beta1
    kind: Kustomization
    resources:
      - $(relpath "$overlay" "$deploy_dir/base")
    components:
      - $(relpath "$overlay" "$outdir")
    images:
      - name: capi-calico-webhook
        newName: REGISTRY/capi-calico-webhook
        newTag: TAG
make-certs.sh: then: kubectl apply -k $(relpath "$start_dir" "$overlay")
NEXT
fi
