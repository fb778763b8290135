//! HTTPS transport for the admission webhook: axum on hyper with rustls (TLS 1.2+, ALPN h2 and http/1.1),
//! certificate hot reload, bounds against slow and abusive clients, `/healthz` and `/readyz`, Prometheus metrics on a
//! separate plain-HTTP port, and graceful shutdown. It knows nothing of Calico: it serves any [`ReviewHandler`].
//!
//! * [`run`] serves until the shutdown future resolves; [`start`] does the same but returns the bound addresses
//!   first (tests bind to port 0).
//! * [`router`] / [`metrics_router`] build the routers alone, for in-process tests.
//! * Shutdown: readiness turns false at once, then (after [`ServerConfig::shutdown_delay`]) the listener closes and
//!   open connections are asked to finish (HTTP/2: GOAWAY; HTTP/1 on the webhook port: the request in flight, or an
//!   idle connection's next one, is answered with `Connection: close`; on the metrics port idle ones close at once);
//!   whatever is still open after [`ServerConfig::drain_timeout`] is dropped. The metrics port keeps answering until
//!   the webhook port has drained.

pub mod body;
mod conn;
pub mod logging;
pub mod metrics;
pub mod routes;
pub mod tls;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::logging::{LogFormat, init_logging};
pub use self::metrics::Metrics;
pub use self::routes::{AppState, Health, metrics_router, router};
pub use self::tls::TlsError;
use crate::admission::api::ReviewHandler;

/// Where the serving certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files (for example a mounted `kubernetes.io/tls` Secret); reloaded when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// Generate (or reuse, while valid for more than 7 days) a CA and a certificate for `localhost`, `127.0.0.1` and
    /// `::1`, written as `ca.crt`, `tls.crt`, `tls.key` in `dir`. For local development.
    SelfSigned { dir: PathBuf },
}

/// Transport settings. [`Default`] gives the production defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// HTTPS listen address (default `0.0.0.0:8443`).
    pub listen: SocketAddr,
    /// Plain-HTTP metrics/probe address (default `0.0.0.0:9090`); `None` disables it.
    pub metrics_listen: Option<SocketAddr>,
    pub tls: TlsSource,
    /// Largest accepted request body (default 7 MiB, as controller-runtime: an AdmissionReview carries the object and
    /// the old object, each up to the API server's 3 MiB).
    pub max_body_bytes: usize,
    /// Memory all request bodies being read or handled may hold at once; while a body is read each of its bytes
    /// counts twice (default 128 MiB, below the shipped Deployment's 384 Mi limit; raised to twice
    /// `max_body_bytes` if lower). A body the budget cannot cover gets 503 at once (see [`body`]).
    pub max_body_memory_bytes: usize,
    /// Deadline for a whole review request: body read, waiting for a handler slot and the handler (default 4 s; keep
    /// it below the webhook's `timeoutSeconds`). Past it: 503.
    pub request_timeout: Duration,
    /// HTTP/1 request head deadline, against slowloris: from the connection's start, and from the first byte of each
    /// later request (default 5 s). A keep-alive connection waiting for its next request is bounded by
    /// `idle_timeout` instead. Bytes of a pipelined request that arrive while another is in flight are not timed.
    pub header_read_timeout: Duration,
    /// Deadline to receive the request body (default 3 s). Past it: 408.
    pub body_read_timeout: Duration,
    /// Deadline for the TLS handshake (default 5 s).
    pub tls_handshake_timeout: Duration,
    /// A connection with no byte in either direction for this long is closed (default 120 s, above the API server's
    /// 90 s for unused connections; bounds idle HTTP/2 and HTTP/1). Raised to `request_timeout + 1 s` if set lower.
    pub idle_timeout: Duration,
    /// A connection older than this (±10 %) is asked to finish (HTTP/2 GOAWAY; HTTP/1 `Connection: close` on the
    /// request in flight, or on an idle connection's next request within `idle_timeout`) and closed `drain_timeout`
    /// later, at least `request_timeout + 1 s` (default 10 min). Bounds what a client that keeps a connection busy
    /// with pings, or stops reading its answers, can hold.
    pub max_connection_age: Duration,
    /// Open connections on the webhook port; at the limit, accepting pauses (default 1024).
    pub max_connections: usize,
    /// Reviews handled at once; more wait for a slot within `request_timeout` (default 64).
    pub max_concurrent_reviews: usize,
    /// HTTP/2 streams per connection (default 64).
    pub max_concurrent_streams: u32,
    /// After the shutdown signal, keep accepting this long with readiness false, so endpoints can be updated
    /// before the listener closes (default 0).
    pub shutdown_delay: Duration,
    /// Longest wait for in-flight requests once the listener is closed (default 20 s; keep the pod's
    /// `terminationGracePeriodSeconds` above `shutdown_delay + drain_timeout`).
    pub drain_timeout: Duration,
    /// Backstop re-read of the certificate files besides the directory watch (default 60 s).
    pub cert_poll_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8443)),
            metrics_listen: Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 9090))),
            tls: TlsSource::SelfSigned {
                dir: std::env::temp_dir().join("capi-calico-webhook-tls"),
            },
            max_body_bytes: 7 * 1024 * 1024,
            max_body_memory_bytes: 128 * 1024 * 1024,
            request_timeout: Duration::from_secs(4),
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(3),
            tls_handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            max_connection_age: Duration::from_secs(600),
            max_connections: 1024,
            max_concurrent_reviews: 64,
            max_concurrent_streams: 64,
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(20),
            cert_poll_interval: Duration::from_secs(60),
        }
    }
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("server task failed: {0}")]
    Task(String),
}

/// A started server: where it listens, and its task.
#[derive(Debug)]
pub struct RunningServer {
    /// Bound HTTPS address.
    pub local_addr: SocketAddr,
    /// Bound metrics address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// Wait until the server has shut down and drained.
    pub async fn wait(self) -> Result<(), ServerError> {
        self.task
            .await
            .map_err(|e| ServerError::Task(e.to_string()))?
    }
}

/// Serve until `shutdown` resolves, then drain and return.
pub async fn run<H: ReviewHandler>(
    config: ServerConfig,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    start(config, handler, shutdown).await?.wait().await
}

/// Load the certificate, bind both listeners and start serving in the background.
pub async fn start<H: ReviewHandler>(
    config: ServerConfig,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningServer, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert, key, self_signed_ca) = match &config.tls {
        TlsSource::Files { cert, key } => (cert.clone(), key.clone(), None),
        TlsSource::SelfSigned { dir } => {
            let paths = tls::ensure_self_signed(dir, &provider)?;
            (paths.cert, paths.key, Some(paths.ca))
        }
    };

    let state = AppState::new(handler, &config);
    let resolver = Arc::new(tls::CertResolver::default());
    let reloader = Arc::new(tls::CertReloader::new(
        cert,
        key,
        Arc::clone(&resolver),
        Arc::clone(state.metrics()),
        Arc::clone(state.health()),
        Arc::clone(&provider),
    ));
    reloader.initial_load()?;
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(provider, resolver)?));

    let listener = bind(config.listen).await?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    tracing::info!(%local_addr, metrics = ?metrics_addr, "serving admission reviews over HTTPS");
    if let Some(ca) = self_signed_ca {
        // Said once the port is known (`--listen 127.0.0.1:0` picks one).
        tracing::info!(
            ca = %ca.display(),
            "self-signed serving certificate for localhost; trust the CA, e.g. curl --cacert {} https://localhost:{}/healthz",
            ca.display(),
            local_addr.port()
        );
    }

    let limits = conn::ConnLimits {
        max_connections: config.max_connections,
        handshake_timeout: config.tls_handshake_timeout,
        header_read_timeout: config.header_read_timeout,
        // A request in progress moves no byte while the handler works: never let the idle timer cut it first.
        idle_timeout: config
            .idle_timeout
            .max(config.request_timeout + Duration::from_secs(1)),
        max_concurrent_streams: config.max_concurrent_streams,
        max_connection_age: config.max_connection_age,
        age_drain: config
            .drain_timeout
            .max(config.request_timeout + Duration::from_secs(1)),
        drain_timeout: config.drain_timeout,
        when_full: conn::WhenFull::Wait,
    };
    let metrics_limits = conn::ConnLimits {
        max_connections: 64,
        when_full: conn::WhenFull::CloseOldest,
        ..limits.clone()
    };

    let (stop_main, stop_main_rx) = watch::channel(false);
    let (stop_metrics, stop_metrics_rx) = watch::channel(false);
    let main = tokio::spawn(conn::serve(
        listener,
        Some(acceptor),
        router(state.clone()),
        limits,
        Some(Arc::clone(state.metrics())),
        stop_main_rx,
        "webhook",
    ));
    let metrics_server = metrics_listener.map(|l| {
        tokio::spawn(conn::serve(
            l,
            None,
            metrics_router(state.clone()),
            metrics_limits,
            None,
            stop_metrics_rx,
            "metrics",
        ))
    });
    let reload = tokio::spawn(Arc::clone(&reloader).run(config.cert_poll_interval));

    let shutdown_delay = config.shutdown_delay;
    let task = tokio::spawn(async move {
        shutdown.await;
        state.health().begin_shutdown();
        tracing::info!(
            shutdown_delay_ms = shutdown_delay.as_millis() as u64,
            "shutdown requested; readiness is now false"
        );
        if !shutdown_delay.is_zero() {
            tokio::time::sleep(shutdown_delay).await;
        }
        let _ = stop_main.send(true);
        let main_result = main.await;
        let _ = stop_metrics.send(true);
        if let Some(m) = metrics_server {
            let _ = m.await;
        }
        reload.abort();
        tracing::info!("server stopped");
        main_result.map_err(|e| ServerError::Task(e.to_string()))
    });

    Ok(RunningServer {
        local_addr,
        metrics_addr,
        task,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("received Ctrl-C"),
        _ = terminate => tracing::info!("received SIGTERM"),
    }
}
