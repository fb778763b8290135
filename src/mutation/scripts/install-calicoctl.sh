#!/bin/bash
# capi-calico-webhook: /etc/capi-calico/install-calicoctl.sh, run from preKubeadmCommands (and by apply-bgp.sh).
# Installs a pinned calicoctl, SHA-256 verified first. Values come from the data file, never sourced.
# CAPI_CALICO_* variables: tests only (the webhook's docs/injection.md).
# Exit codes: 0 installed or already present, 2 bad data file, 3 unsupported architecture or no checksum for it,
# 4 checksum mismatch, 5 download failed (both on the last attempt), 6 no downloader / install failure.
set -eu
set -o pipefail

conf="${CAPI_CALICO_CONF:-/etc/capi-calico/calicoctl.conf}"
# The first writable of these (/opt/bin: Flatcar's /usr is read-only); apply-bgp.sh picks the same.
read -ra dirs <<<"${CAPI_CALICO_INSTALL_DIRS:-/usr/local/bin /opt/bin}"
for install_dir in "${dirs[@]}"; do
  { mkdir -p "$install_dir" && [ -w "$install_dir" ]; } 2>/dev/null && break
done
install_dir="${CAPI_CALICO_INSTALL_DIR:-$install_dir}"
log_dir="${CAPI_CALICO_LOG_DIR:-/var/log/capi-calico}"
attempts="${CAPI_CALICO_DOWNLOAD_ATTEMPTS:-5}"
retry_sleep="${CAPI_CALICO_RETRY_SLEEP:-2}"
max_kib="${CAPI_CALICO_MAX_DOWNLOAD_KIB:-262144}"
target="${install_dir}/calicoctl"
log_file=""
tmp_file=""

if mkdir -p "$log_dir" 2>/dev/null && touch "$log_dir/install-calicoctl.log" 2>/dev/null; then
  log_file="$log_dir/install-calicoctl.log"
fi

log() {
  line="$(date -u '+%Y-%m-%dT%H:%M:%SZ') install-calicoctl: $*"
  printf '%s\n' "$line" >&2
  if [ -n "$log_file" ]; then
    printf '%s\n' "$line" >>"$log_file" 2>/dev/null || true
  fi
}

die() {
  code="$1"
  shift
  log "ERROR: $*"
  exit "$code"
}

cleanup() {
  if [ -n "$tmp_file" ] && [ -e "$tmp_file" ]; then
    rm -f -- "$tmp_file"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for pair in "CAPI_CALICO_DOWNLOAD_ATTEMPTS=$attempts" "CAPI_CALICO_MAX_DOWNLOAD_KIB=$max_kib" \
  "CAPI_CALICO_RETRY_SLEEP=$retry_sleep"; do
  case "${pair#*=}" in
    '' | *[!0-9]*) die 2 "${pair%%=*} must be a non-negative integer, got '${pair#*=}'" ;;
  esac
done
if [ "$attempts" -lt 1 ] || [ "$max_kib" -lt 1 ]; then
  die 2 "CAPI_CALICO_DOWNLOAD_ATTEMPTS and CAPI_CALICO_MAX_DOWNLOAD_KIB must be at least 1"
fi
max_bytes=$((max_kib * 1024))

[ -r "$conf" ] || die 2 "data file $conf is missing or unreadable"

version=""
url_template=""
sha256_amd64=""
sha256_arm64=""
# key=value lines, read verbatim and split at the first '='. Unknown keys are ignored; nothing is evaluated.
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in
    '' | '#'*) continue ;;
    *=*) ;;
    *) die 2 "malformed line in $conf (expected key=value): $line" ;;
  esac
  key="${line%%=*}"
  value="${line#*=}"
  case "$key" in
    version) version="$value" ;;
    url_template) url_template="$value" ;;
    sha256_amd64) sha256_amd64="$value" ;;
    sha256_arm64) sha256_arm64="$value" ;;
    *) ;;
  esac
done <"$conf"

[ -n "$version" ] || die 2 "$conf does not set version"
[ -n "$url_template" ] || die 2 "$conf does not set url_template"

machine="$(uname -m)"
case "$machine" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) die 3 "unsupported architecture '$machine': calicoctl is installed only on amd64 (x86_64) and arm64 (aarch64)" ;;
esac

case "$arch" in
  amd64) expected="$sha256_amd64" ;;
  arm64) expected="$sha256_arm64" ;;
esac
case "$expected" in
  '') die 3 "no SHA-256 for calicoctl $version on $arch in $conf; refusing to install an unverified binary (set capi-calico.io/CALICOCTL_SHA256_$(printf '%s' "$arch" | tr '[:lower:]' '[:upper:]'))" ;;
  *[!0-9a-f]*) die 2 "sha256_$arch in $conf is not lower-case hex: $expected" ;;
esac
[ "${#expected}" -eq 64 ] || die 2 "sha256_$arch in $conf is not 64 hex digits"

# replace_all TEXT PLACEHOLDER VALUE. Not ${text//pat/rep}: bash 5.2 expands '&' in an unquoted rep, and bash 4.2
# (Amazon Linux 2, RHEL 7) keeps the quotes of a quoted one.
replace_all() {
  local text="$1" placeholder="$2" value="$3" done=""
  while [[ "$text" == *"$placeholder"* ]]; do
    done="$done${text%%"$placeholder"*}$value"
    text="${text#*"$placeholder"}"
  done
  printf '%s' "$done$text"
}
url="$(replace_all "$url_template" '{version}' "$version")"
url="$(replace_all "$url" '{arch}' "$arch")"

digest_of() {
  sha256sum -- "$1" | cut -d ' ' -f 1
}

if [ -f "$target" ]; then
  current="$(digest_of "$target" || true)"
  if [ "$current" = "$expected" ]; then
    log "calicoctl $version ($arch) already installed at $target (sha256 $expected); nothing to do"
    exit 0
  fi
  log "existing $target has sha256 $current, expected $expected; replacing it"
fi

if command -v curl >/dev/null 2>&1; then
  fetch() {
    # --max-filesize sees only a declared Content-Length; fetch_bounded's limit bounds every reply.
    curl --fail --location --silent --show-error --proto '=http,https' --proto-redir '=http,https' \
      --connect-timeout 15 --max-time 900 --speed-limit 1024 --speed-time 60 --max-filesize "$max_bytes" \
      --output "$2" -- "$1"
  }
elif command -v wget >/dev/null 2>&1; then
  # wget reads only the lower-case proxy variables.
  export https_proxy="${https_proxy:-${HTTPS_PROXY:-}}" http_proxy="${http_proxy:-${HTTP_PROXY:-}}"
  export no_proxy="${no_proxy:-${NO_PROXY:-}}"
  fetch() {
    # wget's --timeout bounds each read, not the download: bound the whole attempt like curl's --max-time.
    if command -v timeout >/dev/null 2>&1; then
      timeout 900 wget --quiet --tries=1 --timeout=60 --output-document="$2" -- "$1"
    else
      wget --quiet --tries=1 --timeout=60 --output-document="$2" -- "$1"
    fi
  }
else
  die 6 "neither curl nor wget is available to download $url"
fi

# fetch with FILE limited to max_kib KiB (ulimit -f: 1024-byte blocks in bash), in a subshell: a mirror serving
# more, with or without a length, cannot fill the disk. SIGXFSZ ignored: the write fails, curl/wget exit.
fetch_bounded() {
  (
    trap '' XFSZ
    if ! ulimit -f "$max_kib" 2>/dev/null; then
      log "cannot set the file size limit to $max_kib KiB; it stays $(ulimit -f)"
    fi
    fetch "$1" "$2"
  )
}

mkdir -p -- "$install_dir" || die 6 "cannot create $install_dir"
# The temporary file is in the target directory: the mv is an atomic rename.
tmp_file="$(mktemp "$install_dir/.calicoctl.XXXXXX")" || die 6 "cannot create a temporary file in $install_dir"

attempt=1
delay="$retry_sleep"
while :; do
  log "downloading calicoctl $version ($arch) from $url (attempt $attempt/$attempts)"
  rc=0
  fetch_bounded "$url" "$tmp_file" || rc=$?
  if [ "$rc" -eq 0 ]; then
    actual="$(digest_of "$tmp_file")"
    if [ "$actual" = "$expected" ]; then
      break
    fi
    failure="checksum mismatch for $url: expected sha256 $expected, got $actual"
    log "$failure (a truncated or wrong file)"
  else
    failure="download of $url failed (exit $rc)"
    size="$(wc -c <"$tmp_file" 2>/dev/null || echo 0)"
    if [ "$rc" -eq 63 ] || [ "$size" -ge "$max_bytes" ]; then
      failure="$failure: larger than the size limit of $max_kib KiB"
    fi
    log "$failure"
  fi
  if [ "$attempt" -ge "$attempts" ]; then
    case "$rc" in
      0) die 4 "$failure, on the last of $attempts attempts; calicoctl NOT installed" ;;
      *) die 5 "download of $url failed after $attempts attempts; calicoctl NOT installed" ;;
    esac
  fi
  log "attempt $attempt/$attempts failed; retrying in ${delay}s"
  sleep "$delay"
  attempt=$((attempt + 1))
  delay=$((delay * 2))
  if [ "$delay" -gt 60 ]; then
    delay=60
  fi
done

chmod 0755 -- "$tmp_file"
mv -f -- "$tmp_file" "$target" || die 6 "cannot move the verified binary to $target"
tmp_file=""
log "installed calicoctl $version ($arch) at $target (sha256 $actual)"
