//! Serving certificate: loading and checking a PEM pair, the rustls configuration, hot reload, and the
//! self-signed development pair.
//!
//! Hot reload: the served [`CertifiedKey`] sits in an [`ArcSwapOption`] behind a rustls [`ResolvesServerCert`], so a
//! new pair takes effect on the next TLS handshake without touching open connections. A reload task re-reads the
//! files when the *directories* holding them change (a Kubernetes Secret volume is updated by swapping the `..data`
//! symlink, which a watch on the file itself never sees) and, as a backstop, every `cert_poll_interval`. A new pair is
//! parsed and checked (certificate parses, key parses, key matches certificate, not expired) before it is swapped in;
//! a bad pair is refused, the old one is kept, and the refusal is logged at error level and counted in
//! `capi_calico_tls_reloads_total{result="error"}`. The same bad content is reported once, not on every poll. The
//! two files are read one after the other; a pair that does not load is read once more, so a `..data` swap that
//! lands between the two reads is not reported as a bad rotation.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use notify::{RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;

use super::metrics::Metrics;
use super::routes::Health;

/// Why a certificate/key pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no PEM certificate in {path}")]
    NoCertificate { path: PathBuf },
    #[error("unparsable PEM certificate in {path}: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("unparsable private key in {path}: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("certificate {path} expired at {not_after} (Unix seconds)")]
    Expired { path: PathBuf, not_after: i64 },
    #[error(
        "refusing {path} for the self-signed certificate: it {reason}; another user could have put their own CA and \
         key there. Remove it, or pass --self-signed-dir a directory of your own"
    )]
    NotPrivate { path: PathBuf, reason: String },
    #[error("generating the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A checked pair, ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedCertificate {
    pub key: Arc<CertifiedKey>,
    /// Not-after of the leaf certificate, Unix seconds.
    pub not_after: i64,
}

/// Parse and check a PEM certificate chain (leaf first) and PEM private key.
pub fn load_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<LoadedCertificate, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    };
    let not_after = certificate_not_after(leaf).ok_or_else(|| TlsError::BadCertificate {
        path: cert_path.to_owned(),
        reason: "no readable validity period".to_owned(),
    })?;
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::BadKey {
            path: key_path.to_owned(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
    }
    if not_after <= unix_now() {
        return Err(TlsError::Expired {
            path: cert_path.to_owned(),
            not_after,
        });
    }
    Ok(LoadedCertificate {
        key: Arc::new(certified),
        not_after,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Read and check the pair at these paths.
pub fn load_pair_files(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<LoadedCertificate, TlsError> {
    load_pair(&read(cert)?, &read(key)?, cert, key, provider)
}

/// Seconds since the Unix epoch (0 before it); certificate expiry is compared in these.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The certificate currently served; swapped atomically on reload.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: ArcSwapOption<CertifiedKey>,
}

impl CertResolver {
    pub fn set(&self, key: Arc<CertifiedKey>) {
        self.current.store(Some(key));
    }

    /// DER of the leaf certificate being served, if any.
    pub fn current_leaf(&self) -> Option<CertificateDer<'static>> {
        self.current
            .load()
            .as_ref()
            .and_then(|k| k.cert.first().cloned())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// rustls server configuration: TLS 1.3 and 1.2 only, ALPN `h2` then `http/1.1`, certificate from `resolver`.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    resolver: Arc<CertResolver>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// What the last reload attempt saw, so the same bad content is reported once.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Content { cert: Vec<u8>, key: Vec<u8> },
    Unreadable(String),
}

/// Result of one reload check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// Same content as last time (served or refused): nothing done.
    Unchanged,
    /// A new pair is being served.
    Reloaded,
    /// The new content was refused; the previous pair is still served.
    Refused,
}

/// Reloads the pair at fixed paths into a [`CertResolver`].
#[derive(Debug)]
pub struct CertReloader {
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<CertResolver>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<Seen>>,
}

impl CertReloader {
    pub fn new(
        cert: PathBuf,
        key: PathBuf,
        resolver: Arc<CertResolver>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            cert,
            key,
            resolver,
            metrics,
            health,
            provider,
            seen: Mutex::new(None),
        }
    }

    /// First load: any problem is fatal to start-up.
    pub fn initial_load(&self) -> Result<(), TlsError> {
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        match load_pair(&cert, &key, &self.cert, &self.key, &self.provider) {
            Ok(loaded) => {
                self.install(&loaded);
                self.remember(Seen::Content { cert, key });
                tracing::info!(
                    cert = %self.cert.display(),
                    key = %self.key.display(),
                    not_after = loaded.not_after,
                    "serving certificate loaded"
                );
                Ok(())
            }
            Err(e) => {
                self.metrics.tls_reload(false);
                Err(e)
            }
        }
    }

    fn install(&self, loaded: &LoadedCertificate) {
        self.resolver.set(Arc::clone(&loaded.key));
        self.health.set_certificate(loaded.not_after);
        self.metrics.set_certificate_expiry(loaded.not_after);
        self.metrics.tls_reload(true);
    }

    /// Swap the previous observation for `now`; true when it differs.
    fn remember(&self, now: Seen) -> bool {
        match self.seen.lock() {
            Ok(mut seen) => {
                if seen.as_ref() == Some(&now) {
                    false
                } else {
                    *seen = Some(now);
                    true
                }
            }
            Err(_) => true,
        }
    }

    /// Re-read the files; serve them if they changed and are good, refuse them loudly if bad.
    pub fn check(&self) -> ReloadResult {
        self.check_with(read)
    }

    /// [`CertReloader::check`], reading files with `read`.
    fn check_with(&self, read: impl Fn(&Path) -> Result<Vec<u8>, TlsError>) -> ReloadResult {
        let read_pair = || read(&self.cert).and_then(|c| read(&self.key).map(|k| (c, k)));
        let (mut cert, mut key) = match read_pair() {
            Ok(pair) => pair,
            Err(e) => {
                if self.remember(Seen::Unreadable(e.to_string())) {
                    self.metrics.tls_reload(false);
                    tracing::error!(error = %e, "certificate reload refused; still serving the previous certificate");
                    return ReloadResult::Refused;
                }
                return ReloadResult::Unchanged;
            }
        };
        let mut result = load_pair(&cert, &key, &self.cert, &self.key, &self.provider);
        // The two files are read one after the other: a Secret volume's `..data` swap between the reads gives the
        // old certificate with the new key. Read once more; content that moved meanwhile is what to judge.
        if result.is_err()
            && let Ok((again_cert, again_key)) = read_pair()
            && (again_cert != cert || again_key != key)
        {
            result = load_pair(
                &again_cert,
                &again_key,
                &self.cert,
                &self.key,
                &self.provider,
            );
            (cert, key) = (again_cert, again_key);
        }
        if !self.remember(Seen::Content { cert, key }) {
            return ReloadResult::Unchanged;
        }
        match result {
            Ok(loaded) => {
                self.install(&loaded);
                tracing::info!(
                    cert = %self.cert.display(),
                    not_after = loaded.not_after,
                    "serving certificate reloaded"
                );
                ReloadResult::Reloaded
            }
            Err(e) => {
                self.metrics.tls_reload(false);
                tracing::error!(
                    error = %e,
                    cert = %self.cert.display(),
                    key = %self.key.display(),
                    "certificate reload refused; still serving the previous certificate"
                );
                ReloadResult::Refused
            }
        }
    }

    /// Directories to watch: the parents of the certificate and key paths.
    fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for p in [&self.cert, &self.key] {
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
                _ => PathBuf::from("."),
            };
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs
    }

    /// Watch the directories and poll every `poll_interval`, forever (abort the task to stop).
    pub async fn run(self: Arc<Self>, poll_interval: Duration) {
        self.run_with(poll_interval, true).await
    }

    async fn run_with(self: Arc<Self>, poll_interval: Duration, watch: bool) {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let watcher = if watch {
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
                    // A full channel already has a pending wake-up; coalescing is what we want.
                    let _ = tx.try_send(());
                }
            })
        } else {
            Err(notify::Error::generic("watch disabled"))
        };
        let _watcher = match watcher {
            Ok(mut w) => {
                for dir in self.watch_dirs() {
                    if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch certificate directory; relying on polling");
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no file watcher; relying on polling for certificate reload");
                None
            }
        };
        let mut poll = tokio::time::interval(poll_interval.max(Duration::from_millis(10)));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await; // the first tick is immediate; the initial load already happened
        loop {
            tokio::select! {
                _ = poll.tick() => {}
                Some(()) = rx.recv() => {
                    // Let a burst of events (a symlink swap is several) settle, then read once.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while rx.try_recv().is_ok() {}
                }
            }
            self.check();
        }
    }
}

/// Paths of the self-signed development material.
#[derive(Debug, Clone)]
pub struct SelfSignedPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reuse a still-valid self-signed pair in `dir`, or generate a CA and a serving certificate for `localhost`,
/// `127.0.0.1` and `::1`, and write `ca.crt`, `tls.crt`, `tls.key` (0600) there.
pub fn ensure_self_signed(
    dir: &Path,
    provider: &CryptoProvider,
) -> Result<SelfSignedPaths, TlsError> {
    let paths = SelfSignedPaths {
        ca: dir.join("ca.crt"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    const KEEP_IF_VALID_FOR: i64 = 7 * 24 * 3600;
    check_private(dir, &[&paths.ca, &paths.cert, &paths.key])?;
    if paths.ca.is_file()
        && let Ok(existing) = load_pair_files(&paths.cert, &paths.key, provider)
        && existing.not_after - unix_now() > KEEP_IF_VALID_FOR
    {
        tracing::info!(ca = %paths.ca.display(), "reusing self-signed certificate");
        return Ok(paths);
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| TlsError::Write {
                path: dir.to_owned(),
                source,
            })?;
    }
    let generated = generate_self_signed(
        &["localhost", "127.0.0.1", "::1"],
        Duration::from_secs(365 * 24 * 3600),
    )?;
    write_file(&paths.ca, generated.ca_pem.as_bytes(), 0o644)?;
    write_file(&paths.key, generated.key_pem.as_bytes(), 0o600)?;
    write_file(&paths.cert, generated.cert_pem.as_bytes(), 0o644)?;
    tracing::info!(ca = %paths.ca.display(), "generated a self-signed CA and serving certificate");
    Ok(paths)
}

/// The self-signed directory (by default under the shared `/tmp`) and the files in it must belong to this process's
/// user, be no symbolic links, and be writable by no one else (the key: readable by no one else): otherwise another
/// user could have planted a CA and key this server would serve, or swap them later. Missing ones are created here.
fn check_private(dir: &Path, files: &[&Path]) -> Result<(), TlsError> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let key = files.last().copied();
    for path in std::iter::once(dir).chain(files.iter().copied()) {
        let Ok(meta) = fs::symlink_metadata(path) else {
            continue;
        };
        let others = if Some(path) == key { 0o077 } else { 0o022 };
        let reason = if meta.file_type().is_symlink() {
            Some("is a symbolic link".to_string())
        } else if meta.uid() != me {
            Some(format!("belongs to uid {}, not {me}", meta.uid()))
        } else if meta.mode() & others != 0 {
            Some(format!(
                "has mode {:o}, open to other users",
                meta.mode() & 0o7777
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(TlsError::NotPrivate {
                path: path.to_owned(),
                reason,
            });
        }
    }
    Ok(())
}

/// A generated CA and a serving certificate it signed (PEM).
#[derive(Debug, Clone)]
pub struct GeneratedPair {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Generate a CA and a serving certificate for `names` (DNS names or IP addresses), valid for `validity`.
pub fn generate_self_signed(names: &[&str], validity: Duration) -> Result<GeneratedPair, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let now = time::OffsetDateTime::now_utc();
    let not_before = now - time::Duration::hours(1);
    let not_after =
        now + time::Duration::seconds(i64::try_from(validity.as_secs()).unwrap_or(i64::MAX / 2));

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "capi-calico-webhook self-signed CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    let cn = names.first().copied().unwrap_or("localhost");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(GeneratedPair {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Write via a temporary file and rename, so a reader never sees half a file.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(contents).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

// ---- minimal DER reading: just enough to find a certificate's notAfter ----

/// One DER TLV: (tag, contents, rest).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// `notAfter` of an X.509 certificate, in Unix seconds.
pub fn certificate_not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    const SEQUENCE: u8 = 0x30;
    let (tag, certificate, _) = der_tlv(cert.as_ref())?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = der_tlv(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    let (tag, _, after) = der_tlv(rest)?;
    if tag == 0xa0 {
        rest = after; // explicit [0] version
    }
    let (_serial, _, rest) = der_tlv(rest)?;
    let (_signature_algorithm, _, rest) = der_tlv(rest)?;
    let (_issuer, _, rest) = der_tlv(rest)?;
    let (tag, validity, _) = der_tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _not_before, rest) = der_tlv(validity)?;
    let (tag, not_after, _) = der_tlv(rest)?;
    parse_der_time(tag, not_after)
}

fn parse_der_time(tag: u8, value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |s: &str| s.parse::<i32>().ok();
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy = num(&digits[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (num(&digits[..4])?, &digits[4..]),
        _ => return None,
    };
    let month = time::Month::try_from(u8::try_from(num(&rest[0..2])?).ok()?).ok()?;
    let day = u8::try_from(num(&rest[2..4])?).ok()?;
    let hour = u8::try_from(num(&rest[4..6])?).ok()?;
    let minute = u8::try_from(num(&rest[6..8])?).ok()?;
    let second = u8::try_from(num(&rest[8..10])?).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let at = date.with_hms(hour, minute, second).ok()?;
    Some(at.assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    #[test]
    fn der_times() {
        assert_eq!(parse_der_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(parse_der_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(
            parse_der_time(0x18, b"20380119031408Z"),
            Some(2_147_483_648)
        );
        assert_eq!(parse_der_time(0x18, b"20381319031408Z"), None);
        assert_eq!(parse_der_time(0x17, b"7001010000Z"), None);
    }

    #[test]
    fn generated_pair_loads_with_its_not_after() {
        let g = generate_self_signed(&["localhost"], Duration::from_secs(3600)).unwrap();
        let p = Path::new("x");
        let loaded = load_pair(
            g.cert_pem.as_bytes(),
            g.key_pem.as_bytes(),
            p,
            p,
            &provider(),
        )
        .unwrap();
        let expected = unix_now() + 3600;
        assert!(
            (loaded.not_after - expected).abs() <= 5,
            "{} vs {expected}",
            loaded.not_after
        );
    }

    #[test]
    fn bad_pairs_are_refused() {
        let a = generate_self_signed(&["localhost"], Duration::from_secs(3600)).unwrap();
        let b = generate_self_signed(&["localhost"], Duration::from_secs(3600)).unwrap();
        let p = Path::new("x");
        let pr = provider();
        assert!(matches!(
            load_pair(a.cert_pem.as_bytes(), b.key_pem.as_bytes(), p, p, &pr),
            Err(TlsError::KeyMismatch { .. })
        ));
        assert!(matches!(
            load_pair(b"garbage", a.key_pem.as_bytes(), p, p, &pr),
            Err(TlsError::NoCertificate { .. })
        ));
        assert!(matches!(
            load_pair(a.cert_pem.as_bytes(), b"garbage", p, p, &pr),
            Err(TlsError::BadKey { .. })
        ));
    }

    /// A reloader serving pair `a` from `tls.crt` / `tls.key` in a fresh directory.
    struct Loaded {
        _dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
        a: GeneratedPair,
        resolver: Arc<CertResolver>,
        metrics: Arc<Metrics>,
        reloader: CertReloader,
    }

    fn loaded_reloader() -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let a = generate_self_signed(&["localhost"], Duration::from_secs(3600)).unwrap();
        fs::write(&cert, &a.cert_pem).unwrap();
        fs::write(&key, &a.key_pem).unwrap();
        let resolver = Arc::new(CertResolver::default());
        let metrics = Arc::new(Metrics::new());
        let reloader = CertReloader::new(
            cert.clone(),
            key.clone(),
            resolver.clone(),
            metrics.clone(),
            Arc::new(Health::default()),
            Arc::new(provider()),
        );
        reloader.initial_load().unwrap();
        Loaded {
            _dir: dir,
            cert,
            key,
            a,
            resolver,
            metrics,
            reloader,
        }
    }

    #[test]
    fn reloader_keeps_old_pair_on_bad_content_and_reports_once() {
        let t = loaded_reloader();
        let (cert, key, resolver, r) = (&t.cert, &t.key, &t.resolver, &t.reloader);
        let served = resolver.current_leaf().unwrap();
        assert_eq!(r.check(), ReloadResult::Unchanged);

        let b = generate_self_signed(&["localhost"], Duration::from_secs(3600)).unwrap();
        fs::write(cert, &b.cert_pem).unwrap(); // key still a's: mismatch
        assert_eq!(r.check(), ReloadResult::Refused);
        assert_eq!(r.check(), ReloadResult::Unchanged);
        assert_eq!(resolver.current_leaf().unwrap(), served);

        fs::write(key, &b.key_pem).unwrap();
        assert_eq!(r.check(), ReloadResult::Reloaded);
        assert_ne!(resolver.current_leaf().unwrap(), served);
        let text = t.metrics.encode().unwrap();
        assert!(
            text.contains(r#"capi_calico_tls_reloads_total{result="error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"capi_calico_tls_reloads_total{result="success"} 2"#),
            "{text}"
        );
    }

    /// A rotation that lands between the reads of the two files (old certificate, new key) is not refused: the pair
    /// is read again and the new one served, with no error counted.
    #[test]
    fn a_swap_between_the_two_reads_is_read_again() {
        let t = loaded_reloader();
        let (cert, a, resolver, r) = (&t.cert, &t.a, &t.resolver, &t.reloader);
        let b = generate_self_signed(&["localhost"], Duration::from_secs(3600)).unwrap();
        let served = resolver.current_leaf().unwrap();
        // The first read of the certificate still sees a's; every later read sees b's files.
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let swapping = |path: &Path| -> Result<Vec<u8>, TlsError> {
            let n = reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(match (path == cert, n) {
                (true, 0) => a.cert_pem.clone().into_bytes(),
                (true, _) => b.cert_pem.clone().into_bytes(),
                (false, _) => b.key_pem.clone().into_bytes(),
            })
        };
        assert_eq!(r.check_with(swapping), ReloadResult::Reloaded);
        assert_ne!(resolver.current_leaf().unwrap(), served);
        let text = t.metrics.encode().unwrap();
        assert!(
            !text.contains(r#"capi_calico_tls_reloads_total{result="error"} 1"#),
            "{text}"
        );
        // A pair that stays mismatched on the second read is still refused (the files on disk hold a's key).
        fs::write(cert, &b.cert_pem).unwrap();
        assert_eq!(r.check(), ReloadResult::Refused);
    }

    #[tokio::test]
    async fn polling_alone_picks_up_a_data_symlink_swap() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            generate_self_signed(&["localhost"], Duration::from_secs(3600)).unwrap(),
            generate_self_signed(&["localhost"], Duration::from_secs(3600)).unwrap(),
        );
        for (version, pair) in [("..v1", &a), ("..v2", &b)] {
            fs::create_dir(dir.path().join(version)).unwrap();
            fs::write(dir.path().join(version).join("tls.crt"), &pair.cert_pem).unwrap();
            fs::write(dir.path().join(version).join("tls.key"), &pair.key_pem).unwrap();
        }
        std::os::unix::fs::symlink("..v1", dir.path().join("..data")).unwrap();
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.path().join(f)).unwrap();
        }
        let resolver = Arc::new(CertResolver::default());
        let r = Arc::new(CertReloader::new(
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            resolver.clone(),
            Arc::new(Metrics::new()),
            Arc::new(Health::default()),
            Arc::new(provider()),
        ));
        r.initial_load().unwrap();
        let first = resolver.current_leaf().unwrap();
        let task = tokio::spawn(Arc::clone(&r).run_with(Duration::from_millis(50), false));
        std::os::unix::fs::symlink("..v2", dir.path().join("..data_tmp")).unwrap();
        fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while resolver.current_leaf().unwrap() == first {
            assert!(std::time::Instant::now() < deadline, "poll did not reload");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
    }

    #[test]
    fn self_signed_is_written_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let pr = provider();
        let paths = ensure_self_signed(dir.path(), &pr).unwrap();
        let first = fs::read(&paths.cert).unwrap();
        assert!(
            fs::read_to_string(&paths.ca)
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&paths.key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        ensure_self_signed(dir.path(), &pr).unwrap();
        assert_eq!(fs::read(&paths.cert).unwrap(), first);
    }

    /// A self-signed directory or key that another user could write (or read, for the key), a symbolic link, or a
    /// directory another user owns is refused with a message naming it; a directory of one's own is used.
    #[test]
    fn self_signed_material_open_to_other_users_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let pr = provider();
        let refused = |dir: &Path, what: &str| match ensure_self_signed(dir, &pr) {
            Err(e @ TlsError::NotPrivate { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(what) && text.contains("--self-signed-dir"),
                    "{text}"
                );
            }
            other => panic!("expected NotPrivate ({what}), got {other:?}"),
        };
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("tls");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        refused(&dir, "has mode 777");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let paths = ensure_self_signed(&dir, &pr).unwrap();
        fs::set_permissions(&paths.key, fs::Permissions::from_mode(0o644)).unwrap();
        refused(&dir, "tls.key");
        fs::set_permissions(&paths.key, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(&paths.ca, fs::Permissions::from_mode(0o666)).unwrap();
        refused(&dir, "ca.crt");
        fs::set_permissions(&paths.ca, fs::Permissions::from_mode(0o644)).unwrap();
        ensure_self_signed(&dir, &pr).unwrap();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        refused(&link, "symbolic link");
        // Owned by someone else: only root can arrange that here.
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
            refused(&dir, "belongs to uid 65534");
        }
        // A missing directory is created for this user alone.
        let fresh = base.path().join("fresh");
        ensure_self_signed(&fresh, &pr).unwrap();
        assert_eq!(
            fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
