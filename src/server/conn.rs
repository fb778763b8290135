//! Accept loop and per-connection bounds: a connection limit (accepting pauses while it is reached, or, on the
//! probe and metrics port, the oldest connection is asked to close: see [`WhenFull`]), a TLS
//! handshake deadline, hyper's HTTP/1 header read timeout (slowloris; hyper starts it whenever it waits for a request
//! head, so it also closes HTTP/1 keep-alive connections idle for that long), an I/O idle timeout (no byte either
//! way: closes silent HTTP/2 connections and stalled peers), a maximum connection age (a client that keeps its
//! connection busy with PINGs is never idle, and one that stops reading its answers holds them: past the age, the
//! connection is asked to finish and closed a drain deadline later), HTTP/2 stream limits, and graceful drain.
//!
//! The protocol is chosen from ALPN (`h2` → HTTP/2, anything else → HTTP/1.1), never by sniffing the first bytes:
//! sniffing would wait for bytes with no header timer running, so a silent client would be bounded only by the idle
//! timeout. The plain-HTTP metrics port speaks HTTP/1.1 only.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::Request;
use hyper::body::Incoming;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::util::Either;

use super::metrics::Metrics;

/// Bounds for one listener.
#[derive(Debug, Clone)]
pub(crate) struct ConnLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_concurrent_streams: u32,
    pub max_connection_age: Duration,
    /// How long a connection past its age may take to finish: never less than a request may take.
    pub age_drain: Duration,
    pub drain_timeout: Duration,
    pub when_full: WhenFull,
}

/// What a listener does with a new connection while `max_connections` are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenFull {
    /// Accept nothing until one closes (the webhook port: the API server is its only client, and a connection of its
    /// own must not be closed to make room for a stranger's).
    Wait,
    /// Accept it, and close the oldest open connection that has no request in flight (the oldest of all when every
    /// one has: it is asked to finish as at its maximum age). For the probe and metrics port: the kubelet's liveness
    /// probe opens a new connection each time, and a pod that holds every slot with connections that send nothing,
    /// or half a request head, must not get the webhook restarted. Connections still finishing count against a
    /// second `max_connections`, past which accepting pauses as with [`WhenFull::Wait`].
    CloseOldest,
}

/// What one connection buffers at most besides the body budget: the HTTP/1 read buffer, the HTTP/2 stream and
/// connection windows.
const CONN_BUFFER_BYTES: usize = 64 * 1024;

/// HTTP/1.1-only and HTTP/2-only connection builders.
struct Builders {
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

fn builder(limits: &ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(100)
        // What one connection may buffer beyond the body budget (hyper's default is ~400 KB): request heads are a
        // few hundred bytes, and bodies are read in chunks of this size at most.
        .max_buf_size(CONN_BUFFER_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        // The flow-control windows bound what a peer may send before the body reader asks for more (hyper's
        // default is 1 MiB per stream and per connection); the connection window bounds all its streams together.
        .initial_stream_window_size(CONN_BUFFER_BYTES as u32)
        .initial_connection_window_size(CONN_BUFFER_BYTES as u32)
        .max_header_list_size(64 * 1024)
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256));
    builder
}

/// Serve `router` on `listener` until `stop` turns true, then drain for at most `drain_timeout`.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: ConnLimits,
    metrics: Option<Arc<Metrics>>,
    mut stop: watch::Receiver<bool>,
    name: &'static str,
) {
    let builders = Arc::new(Builders {
        http1: builder(&limits).http1_only(),
        http2: builder(&limits).http2_only(),
    });
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(match limits.when_full {
        WhenFull::Wait => max,
        WhenFull::CloseOldest => max.saturating_mul(2),
    }));
    let open = Arc::new(OpenSet::new(max));
    let mut next_id: u64 = 0;
    let mut tasks = JoinSet::new();
    let conn_stop = stop.clone();
    let ages = std::hash::RandomState::new();
    let stopped = async move {
        // An Err means the sender is gone: treat it as stop too.
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);

    loop {
        while tasks.try_join_next().is_some() {}
        let slot = tokio::select! {
            _ = &mut stopped => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        // Subscribed before the task starts: a connection that finishes its handshake after the stop still sees it.
        let mut stop = conn_stop.clone();
        let age = jittered(limits.max_connection_age, &ages, peer);
        let builders = Arc::clone(&builders);
        let tls = tls.clone();
        let limits = limits.clone();
        let metrics = metrics.clone();
        let member = match limits.when_full {
            WhenFull::Wait => None,
            WhenFull::CloseOldest => {
                next_id += 1;
                Some(OpenSet::admit(&open, next_id, name))
            }
        };
        let service = TowerToHyperService::new(match &member {
            None => Either::Left(router.clone()),
            Some(member) => Either::Right(member.counted(router.clone())),
        });
        tasks.spawn(async move {
            let _slot = slot;
            let close_early = member.as_ref().map(|m| Arc::clone(&m.state));
            let _open = metrics.map(OpenConnection::new);
            let drain = limits.age_drain;
            let result = match tls {
                Some(acceptor) => match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                        let builder = if h2 { &builders.http2 } else { &builders.http1 };
                        let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
                        serve_until(builder.serve_connection(io, service), age, drain, &mut stop, close_early).await
                    }
                    Ok(Err(e)) => Err(e.into()),
                    Err(_) => Err("TLS handshake timed out".into()),
                },
                None => {
                    let io = TokioIo::new(IdleTimeout::new(tcp, limits.idle_timeout));
                    serve_until(builders.http1.serve_connection(io, service), age, drain, &mut stop, close_early)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
            }
        });
    }

    drop(listener);
    let open = tasks.len();
    tracing::info!(
        listener = name,
        open_connections = open,
        "stopped accepting; draining"
    );
    let drained = async { while tasks.join_next().await.is_some() {} };
    match tokio::time::timeout(limits.drain_timeout, drained).await {
        Ok(()) => tracing::info!(listener = name, "drained"),
        Err(_) => tracing::warn!(
            listener = name,
            drain_timeout_ms = limits.drain_timeout.as_millis() as u64,
            "drain deadline passed; closing the remaining connections"
        ),
    }
    tasks.shutdown().await;
}

/// Drive `conn` until it ends. At the listener's stop, or once it is `age` old, ask it to finish (HTTP/2 GOAWAY;
/// HTTP/1 closes after the request in flight): after a stop, the listener's drain deadline bounds the rest; after
/// the age, `drain` does, and then the connection is dropped (closed) whatever it was doing. When `close_early` says
/// a newer connection needs its place: closed at once when no request is in flight, else as at the age.
async fn serve_until<C, E>(
    conn: C,
    age: Duration,
    drain: Duration,
    stop: &mut watch::Receiver<bool>,
    close_early: Option<Arc<ConnState>>,
) -> Result<(), E>
where
    C: GracefulConnection<Error = E>,
{
    tokio::pin!(conn);
    let asked = async {
        match &close_early {
            Some(state) => state.close.notified().await,
            None => std::future::pending().await,
        }
    };
    let stopping = tokio::select! {
        result = conn.as_mut() => return result,
        _ = stop.wait_for(|s| *s) => true,
        _ = tokio::time::sleep(age) => false,
        () = asked => {
            if close_early.is_some_and(|state| !state.busy()) {
                // Silent, idle, or halfway through a request head: nothing to finish.
                return Ok(());
            }
            false
        }
    };
    conn.as_mut().graceful_shutdown();
    if stopping {
        return conn.await;
    }
    match tokio::time::timeout(drain, conn).await {
        Ok(result) => result,
        Err(_) => {
            tracing::debug!(
                drain_ms = drain.as_millis() as u64,
                "a connection past its maximum age did not finish in time; closed"
            );
            Ok(())
        }
    }
}

/// `age` give or take 10 %, different for each connection, so that connections opened together (the API server's,
/// after a restart) are not all closed at once.
fn jittered(age: Duration, seed: &std::hash::RandomState, peer: std::net::SocketAddr) -> Duration {
    use std::hash::BuildHasher as _;
    let spread = age / 5;
    let nanos = u64::try_from(spread.as_nanos()).unwrap_or(u64::MAX).max(1);
    age - age / 10 + Duration::from_nanos(seed.hash_one((peer, Instant::now())) % nanos)
}

/// The open connections of a [`WhenFull::CloseOldest`] listener, oldest first.
struct OpenSet {
    max: usize,
    members: Mutex<VecDeque<(u64, Arc<ConnState>)>>,
}

/// What the listener knows of one of its connections: requests in flight, and the signal that closes it early.
#[derive(Default)]
pub(crate) struct ConnState {
    in_flight: AtomicUsize,
    close: Notify,
}

impl ConnState {
    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }
}

/// A request in flight on a connection, counted until its response is produced (or the request dropped).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn new(state: &Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's place in its [`OpenSet`], given back when the connection ends.
struct Member {
    set: Arc<OpenSet>,
    id: u64,
    state: Arc<ConnState>,
}

impl Member {
    /// `router` for this member's connection, counting its requests in flight.
    fn counted(&self, router: Router) -> Counted {
        Counted {
            router,
            state: Arc::clone(&self.state),
        }
    }
}

/// A router that counts the requests in flight on its connection (until each response is produced).
#[derive(Clone)]
struct Counted {
    router: Router,
    state: Arc<ConnState>,
}

impl tower::Service<Request<Incoming>> for Counted {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<Request<Incoming>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::new(&self.state);
        let response = self.router.call(request);
        Box::pin(async move {
            let _in_flight = in_flight;
            response.await
        })
    }
}

impl OpenSet {
    fn new(max: usize) -> Self {
        OpenSet {
            max,
            members: Mutex::new(VecDeque::with_capacity(max + 1)),
        }
    }

    /// Add connection `id`. When `max` are open already, first signal the oldest of them without a request in flight
    /// (else the oldest) to close, and forget it: it is on its way out, and holds its slot until it is gone.
    fn admit(set: &Arc<OpenSet>, id: u64, listener: &'static str) -> Member {
        let state = Arc::new(ConnState::default());
        let mut members = set.members.lock().unwrap_or_else(|e| e.into_inner());
        // Among the connections already open: the new one has not had time to send a request.
        if members.len() >= set.max {
            let at = members.iter().position(|(_, m)| !m.busy()).unwrap_or(0);
            if let Some((oldest, closing)) = members.remove(at) {
                // Stored if that connection is not waiting yet: it closes as soon as it starts serving.
                closing.close.notify_one();
                tracing::debug!(
                    listener,
                    connection = oldest,
                    max_connections = set.max,
                    "connection limit reached: an older connection is closed to make room"
                );
            }
        }
        members.push_back((id, Arc::clone(&state)));
        drop(members);
        Member {
            set: Arc::clone(set),
            id,
            state,
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut members = self.set.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = members.iter().position(|(id, _)| *id == self.id) {
            members.remove(at);
        }
    }
}

/// Counts a connection in the `open_connections` gauge for as long as it lives, even if its task panics.
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.connection_opened();
        OpenConnection(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// Fails I/O with `TimedOut` when no byte moved in either direction for `timeout`.
pub(crate) struct IdleTimeout<T> {
    inner: T,
    timeout: Duration,
    last_activity: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    pub(crate) fn new(inner: T, timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            timeout,
            last_activity: now,
            sleep: Box::pin(tokio::time::sleep_until(now + timeout)),
        }
    }

    /// Called when the inner I/O is pending: true once the connection has been idle too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let deadline = self.last_activity + self.timeout;
            if self.sleep.deadline() != deadline {
                self.sleep.as_mut().reset(deadline);
            }
            match self.sleep.as_mut().poll(cx) {
                Poll::Pending => return false,
                Poll::Ready(()) if Instant::now() >= self.last_activity + self.timeout => {
                    return true;
                }
                Poll::Ready(()) => continue,
            }
        }
    }

    fn timed_out() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.last_activity = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.last_activity = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.last_activity = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Whether `member`'s close signal was sent (consumes it).
    async fn signalled(member: &Member) -> bool {
        tokio::time::timeout(Duration::from_millis(20), member.state.close.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_full_set_closes_its_oldest_connection_without_a_request_in_flight() {
        let set = Arc::new(OpenSet::new(3));
        let members: Vec<Member> = (1..=3).map(|id| OpenSet::admit(&set, id, "t")).collect();
        // The oldest has a request in flight: the next oldest makes room.
        let in_flight = InFlight::new(&members[0].state);
        let fourth = OpenSet::admit(&set, 4, "t");
        assert!(!signalled(&members[0]).await);
        assert!(signalled(&members[1]).await);
        assert!(!signalled(&members[2]).await);
        // Every one busy: the oldest is asked anyway (it finishes its request first, see `serve_until`).
        let _busy: Vec<InFlight> = [&members[2], &fourth]
            .map(|m| InFlight::new(&m.state))
            .into();
        let _fifth = OpenSet::admit(&set, 5, "t");
        assert!(signalled(&members[0]).await);
        drop(in_flight);
        assert!(!members[0].state.busy());
        // A member that ends leaves the set: no room needed for the next one.
        drop(members);
        let _sixth = OpenSet::admit(&set, 6, "t");
        assert!(!signalled(&fourth).await);
        assert_eq!(set.members.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn idle_connection_times_out_and_activity_extends_it() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut io = IdleTimeout::new(a, Duration::from_millis(200));
        let mut buf = [0u8; 4];
        tokio::time::sleep(Duration::from_millis(120)).await;
        b.write_all(b"hi").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 2);
        let started = Instant::now();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(190));
        drop(b);
    }
}
