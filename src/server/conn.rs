//! Accept loop and per-connection bounds: a connection limit (accepting pauses while it is reached, or, on the
//! probe and metrics port, the oldest connection is asked to close: see [`WhenFull`]), a TLS
//! handshake deadline, an HTTP/1 request-head deadline (slowloris: see [`ConnIo`]), an I/O idle timeout (no byte
//! either way: closes silent HTTP/2 connections, stalled peers and HTTP/1 keep-alive connections left unused), a
//! maximum connection age (a client that keeps its connection busy with PINGs is never idle, and one that stops
//! reading its answers holds them: past the age, the connection is asked to finish and closed a drain deadline
//! later), HTTP/2 stream limits, and graceful drain.
//!
//! HTTP/1 keep-alive connections are never closed while idle by a timer shorter than the idle timeout, nor at their
//! age or at a stop while idle: the API server talks HTTP/1.1 to webhooks, keeps an unused connection for 90 s, and
//! does not retry a POST written on a connection the server closed at that moment (the user sees `EOF`). Such a
//! connection is retired at its next request instead (answered with `Connection: close`), or by the idle timeout,
//! which must exceed the client's (120 s by default), or at the end of the drain.
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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use axum::http::Request;
use hyper::body::Incoming;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

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
        // Not hyper's: it also runs while a keep-alive connection waits for its next request, and closed it after
        // this long. `ConnIo` times a request head from its first byte instead.
        .header_read_timeout(None)
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
        let state = match &member {
            None => Arc::new(ConnState::default()),
            Some(member) => Arc::clone(&member.state),
        };
        let service = TowerToHyperService::new(Counted {
            router: router.clone(),
            state: Arc::clone(&state),
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
                        let heads = (!h2).then(|| (Arc::clone(&state), limits.header_read_timeout));
                        let io = TokioIo::new(ConnIo::new(stream, limits.idle_timeout, heads));
                        // The API server's pooled connections: retired at their next request (the probe port's GET
                        // clients retry a request on a connection closed under them).
                        let http1 = (!h2 && limits.when_full == WhenFull::Wait)
                            .then_some((state, limits.idle_timeout));
                        serve_until(builder.serve_connection(io, service), age, drain, &mut stop, close_early, http1)
                            .await
                    }
                    Ok(Err(e)) => Err(e.into()),
                    Err(_) => Err("TLS handshake timed out".into()),
                },
                None => {
                    let heads = Some((Arc::clone(&state), limits.header_read_timeout));
                    let io = TokioIo::new(ConnIo::new(tcp, limits.idle_timeout, heads));
                    let conn = builders.http1.serve_connection(io, service);
                    let http1 = (limits.when_full == WhenFull::Wait).then_some((state, limits.idle_timeout));
                    serve_until(conn, age, drain, &mut stop, close_early, http1).await
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
/// the age, `drain` does, and then the connection is dropped (closed) whatever it was doing. An idle HTTP/1
/// connection (`http1`) is asked only once its next request has started, so that it is answered with `Connection:
/// close` rather than closed under a client about to reuse it; until then the idle timeout (or, at a stop, the drain
/// deadline) bounds it. When `close_early` says a newer connection needs its place: closed at once when no request is
/// in flight, else as at the age.
async fn serve_until<C, E>(
    conn: C,
    age: Duration,
    drain: Duration,
    stop: &mut watch::Receiver<bool>,
    close_early: Option<Arc<ConnState>>,
    http1: Option<(Arc<ConnState>, Duration)>,
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
    if let Some((state, wait)) = &http1 {
        // Its next answer says `Connection: close` (see `Counted`); hyper closes the connection after it. Waiting for
        // that request is bounded by the idle timeout (a client closes a connection it left unused first: the API
        // server after 90 s), so a client that never asks again, or stops reading an answer, is still closed.
        state.retire.store(true, Ordering::Release);
        let started = state.started.notified();
        tokio::pin!(started);
        started.as_mut().enable();
        if !state.busy() {
            tokio::select! {
                result = conn.as_mut() => return result,
                () = started => {}
                () = tokio::time::sleep(*wait) => {}
            }
        }
    }
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

/// What the listener knows of one of its connections: requests in flight, requests started, and the signals that
/// close it early and that a request started.
#[derive(Default)]
pub(crate) struct ConnState {
    in_flight: AtomicUsize,
    started_count: AtomicU64,
    close: Notify,
    started: Notify,
    /// An HTTP/1 connection to end after its next answer, which then says `Connection: close`.
    retire: AtomicBool,
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
        state.started_count.fetch_add(1, Ordering::AcqRel);
        state.started.notify_waiters();
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
            let mut response = response.await?;
            // Still counted while the answer is produced; the header only tells hyper what to do after it.
            if in_flight.0.retire.load(Ordering::Acquire) {
                response.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            drop(in_flight);
            Ok(response)
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

/// A connection's I/O with its timers. Fails with `TimedOut` when no byte moved in either direction for `timeout`
/// (idle), and, for HTTP/1 (`heads`), when a request head is not complete in time: from the connection's start, and
/// then from the first byte read while no request is in flight, a request must start (be dispatched) within the head
/// timeout. Waiting between requests is bounded by the idle timeout alone: a keep-alive connection the client holds
/// for later is not closed under it.
pub(crate) struct ConnIo<T> {
    inner: T,
    timeout: Duration,
    last_activity: Instant,
    sleep: Pin<Box<Sleep>>,
    head: Option<HeadDeadline>,
}

/// See [`ConnIo`].
struct HeadDeadline {
    state: Arc<ConnState>,
    timeout: Duration,
    /// Since when a request head is awaited, and how many requests had started then; `None` between requests (until
    /// the next one's first byte) and while one is in flight.
    since: Option<(Instant, u64)>,
    sleep: Pin<Box<Sleep>>,
}

impl HeadDeadline {
    fn started(&self) -> u64 {
        self.state.started_count.load(Ordering::Acquire)
    }

    /// Bytes arrived: they begin a request head unless one is awaited already or a request is in flight.
    fn on_bytes(&mut self) {
        self.forget_if_started();
        if self.since.is_none() && !self.state.busy() {
            self.since = Some((Instant::now(), self.started()));
        }
    }

    /// The awaited head became a request.
    fn forget_if_started(&mut self) {
        if self.since.is_some_and(|(_, n)| n != self.started()) {
            self.since = None;
        }
    }

    /// Called when the inner I/O is pending: true once the awaited head is overdue.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.forget_if_started();
        let Some((since, _)) = self.since else {
            return false;
        };
        let deadline = since + self.timeout;
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx).is_ready() && Instant::now() >= deadline
    }
}

impl<T> ConnIo<T> {
    /// `inner` with an idle `timeout`, and for HTTP/1 the request-head deadline `heads` (the connection's state,
    /// which counts its requests, and the head timeout).
    pub(crate) fn new(
        inner: T,
        timeout: Duration,
        heads: Option<(Arc<ConnState>, Duration)>,
    ) -> Self {
        let now = Instant::now();
        Self {
            inner,
            timeout,
            last_activity: now,
            sleep: Box::pin(tokio::time::sleep_until(now + timeout)),
            head: heads.map(|(state, timeout)| HeadDeadline {
                since: Some((now, state.started_count.load(Ordering::Acquire))),
                state,
                timeout,
                sleep: Box::pin(tokio::time::sleep_until(now + timeout)),
            }),
        }
    }

    /// Called when the inner I/O is pending: the error to end the connection with, once a timer has run out.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.head.as_mut().is_some_and(|h| h.expired(cx)) {
            return Some(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received in time",
            ));
        }
        loop {
            let deadline = self.last_activity + self.timeout;
            if self.sleep.deadline() != deadline {
                self.sleep.as_mut().reset(deadline);
            }
            match self.sleep.as_mut().poll(cx) {
                Poll::Pending => return None,
                Poll::Ready(()) if Instant::now() >= self.last_activity + self.timeout => {
                    return Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for too long",
                    ));
                }
                Poll::Ready(()) => continue,
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ConnIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.last_activity = Instant::now();
                if r.is_ok()
                    && buf.filled().len() > before
                    && let Some(head) = &mut this.head
                {
                    head.on_bytes();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match this.expired(cx) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ConnIo<T> {
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
            Poll::Pending => match this.expired(cx) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
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
            Poll::Pending => match this.expired(cx) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
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
        let mut io = ConnIo::new(a, Duration::from_millis(200), None);
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

    /// HTTP/1: the first head is due within the head timeout of the connection's start; once a request started, the
    /// wait for the next one is bounded by the idle timeout only, and a later head is due within the head timeout of
    /// its first byte.
    #[tokio::test]
    async fn request_heads_are_timed_from_their_first_byte_not_between_requests() {
        let head = Duration::from_millis(150);
        let state = Arc::new(ConnState::default());
        let mut buf = [0u8; 8];

        // A silent new connection: cut at the head deadline.
        let (a, _b) = tokio::io::duplex(64);
        let mut io = ConnIo::new(a, Duration::from_secs(10), Some((Arc::clone(&state), head)));
        let started = Instant::now();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("request head"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));

        // A request arrives and starts: the connection may then wait for the next one longer than the head timeout.
        let (a, mut b) = tokio::io::duplex(64);
        let mut io = ConnIo::new(a, Duration::from_secs(10), Some((Arc::clone(&state), head)));
        b.write_all(b"GET").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 3);
        drop(InFlight::new(&state)); // dispatched and answered
        let waited = tokio::time::timeout(Duration::from_millis(500), io.read(&mut buf)).await;
        assert!(waited.is_err(), "the keep-alive wait was cut: {waited:?}");

        // The next request's first byte starts its head deadline.
        b.write_all(b"P").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        let started = Instant::now();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
