//! HTTPS and raw-TLS clients for the tests that talk to a running server (in process or the real binary): a
//! reqwest client trusting given CAs, raw rustls connections with a chosen ALPN, and the slow-client moves.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// ALPN for an HTTP/1.1-only client.
pub const HTTP1: &[&[u8]] = &[b"http/1.1"];

pub fn install_provider() {
    // Another test may have installed it already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTPS client trusting `cas` (PEM). `keep_alive: false` opens a new connection (and TLS handshake) per request.
pub fn https_client<S: AsRef<str>>(cas: &[S], keep_alive: bool) -> reqwest::Client {
    install_provider();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only(
            cas.iter()
                .map(|pem| reqwest::Certificate::from_pem(pem.as_ref().as_bytes()).unwrap()),
        )
        .timeout(Duration::from_secs(10));
    if !keep_alive {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().unwrap()
}

pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("https://localhost:{}{path}", addr.port())
}

/// A raw TLS connection to `addr` as `localhost`, trusting `cas` (PEM), offering `alpn`.
pub async fn tls_connect<S: AsRef<str>>(
    addr: SocketAddr,
    cas: &[S],
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    install_provider();
    let mut roots = RootCertStore::empty();
    for pem in cas {
        for cert in CertificateDer::pem_slice_iter(pem.as_ref().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// Read until the peer closes (Some(what was read)) or `within` passes (None).
pub async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Slowloris: write `bytes` one at a time, waiting up to `gap` after each for the server to hang up. True when the
/// server cut the connection (a refused write or a close) before the last byte.
pub async fn cut_off_while_trickling<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
    gap: Duration,
) -> bool {
    for byte in bytes {
        if s.write_all(&[*byte]).await.is_err() || s.flush().await.is_err() {
            return true;
        }
        if closed_within(s, gap).await.is_some() {
            return true;
        }
    }
    false
}
