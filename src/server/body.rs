//! Reading a request body into memory under a server-wide budget.
//!
//! Each body is bounded by `max_body_bytes`, but a thousand connections each sending most of a 7 MiB body would
//! still hold gigabytes before any of them reached the handler. So all bodies being read or handled share one
//! [`BodyBudget`] (`max_body_memory_bytes`), counted in bytes:
//!
//! - A body reserves memory as its data arrives, before it keeps a piece: a client has to send bytes to hold any of
//!   the budget, and one that stops sending is cut by the body deadline and gives its share back.
//! - While the body is read, each byte counts twice (the pieces hyper hands over, then the joined copy); once
//!   joined, once. The reservation is returned when the request is answered.
//! - When the budget cannot cover the next piece, the body is refused at once with 503 and gives back what it held.
//!   It never waits while holding memory, so bodies cannot block each other, each holding part of the budget and
//!   waiting for the rest. The server stays up and answers again as soon as other bodies are done, instead of being
//!   killed for memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use http_body_util::BodyExt;
use tokio::time::{Instant, timeout_at};

/// Memory that request bodies may hold at once, shared by all connections.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    available: Arc<AtomicUsize>,
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self {
            available: Arc::new(AtomicUsize::new(bytes)),
        }
    }

    /// Bytes not reserved right now.
    pub fn available_bytes(&self) -> usize {
        self.available.load(Ordering::Acquire)
    }

    /// Take `bytes` from the budget if it has them; never waits.
    fn try_take(&self, bytes: usize) -> bool {
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(bytes)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.available.fetch_add(bytes, Ordering::AcqRel);
    }
}

/// Bytes taken from a [`BodyBudget`], given back on drop.
#[derive(Debug)]
struct Reservation {
    budget: BodyBudget,
    bytes: usize,
}

impl Reservation {
    /// Grow to `bytes` (no-op if already there); `false` when the budget cannot cover it.
    fn grow_to(&mut self, bytes: usize) -> bool {
        let more = bytes.saturating_sub(self.bytes);
        if more == 0 || self.budget.try_take(more) {
            self.bytes = self.bytes.max(bytes);
            true
        } else {
            false
        }
    }

    /// Give back everything above `bytes`.
    fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.budget.give_back(self.bytes - bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// A body read into memory, with its share of the budget (given back when this is dropped).
#[derive(Debug)]
pub struct Buffered {
    bytes: Bytes,
    _reserved: Reservation,
}

impl std::ops::Deref for Buffered {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Read,
    Timeout,
    Overloaded,
}

impl BodyError {
    /// The answer to the client: status and a short reason.
    pub fn answer(&self) -> (StatusCode, &'static str) {
        match self {
            BodyError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
            BodyError::Read => (StatusCode::BAD_REQUEST, "could not read request body"),
            BodyError::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            ),
            BodyError::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded: the memory for request bodies is in use, retry",
            ),
        }
    }
}

/// Read `body` (at most `max` bytes) by `deadline`, reserving from `budget` before keeping each piece.
///
/// The pieces are kept as they arrive (hyper's buffers: no copy, and no growing buffer to leave garbage behind for
/// the allocator) and joined once at the end; a body of one piece is not copied at all.
pub async fn read(
    body: Body,
    max: usize,
    budget: &BodyBudget,
    deadline: Instant,
) -> Result<Buffered, BodyError> {
    match timeout_at(deadline, read_all(body, max, budget)).await {
        Ok(result) => result,
        Err(_) => Err(BodyError::Timeout),
    }
}

async fn read_all(mut body: Body, max: usize, budget: &BodyBudget) -> Result<Buffered, BodyError> {
    let mut reserved = Reservation {
        budget: budget.clone(),
        bytes: 0,
    };
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyError::Read)?.into_data() else {
            continue; // trailers
        };
        len += data.len();
        if len > max {
            return Err(BodyError::TooLarge);
        }
        if !reserved.grow_to(len.saturating_mul(2)) {
            return Err(BodyError::Overloaded);
        }
        pieces.push(data);
    }
    let bytes = match pieces.len() {
        0 => Bytes::new(),
        1 => pieces.swap_remove(0),
        _ => {
            let mut joined = Vec::with_capacity(len);
            for piece in &pieces {
                joined.extend_from_slice(piece);
            }
            Bytes::from(joined)
        }
    };
    drop(pieces);
    reserved.shrink_to(len);
    Ok(Buffered {
        bytes,
        _reserved: reserved,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    use super::*;

    fn chunked(chunks: Vec<&'static [u8]>) -> Body {
        let stream = futures::stream::iter(chunks)
            .map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(c))));
        Body::new(StreamBody::new(stream))
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn reads_the_body_and_holds_its_size_until_dropped() {
        let budget = BodyBudget::new(64 * 1024);
        let body = chunked(vec![b"{\"a\":", &[b'1'; 3000], b"}"]);
        let read = read(body, 10_000, &budget, soon()).await.unwrap();
        assert_eq!(read.len(), 5 + 3000 + 1);
        assert_eq!(&read[..5], b"{\"a\":");
        assert_eq!(budget.available_bytes(), 64 * 1024 - 3006);
        drop(read);
        assert_eq!(budget.available_bytes(), 64 * 1024);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_and_holds_nothing() {
        let budget = BodyBudget::new(64 * 1024);
        let body = chunked(vec![&[b' '; 6000], &[b' '; 6000]]);
        assert_eq!(
            read(body, 10_000, &budget, soon()).await.unwrap_err(),
            BodyError::TooLarge
        );
        assert_eq!(budget.available_bytes(), 64 * 1024);
    }

    #[tokio::test]
    async fn a_spent_budget_refuses_the_next_body_at_once_and_it_gives_back_what_it_held() {
        // 16 KiB: the first body holds 6000 bytes once read; the second needs twice its 6000 while reading.
        let budget = BodyBudget::new(16 * 1024);
        let first = read(chunked(vec![&[b' '; 6000]]), 10_000, &budget, soon())
            .await
            .unwrap();
        let second = || {
            read(
                chunked(vec![&[b' '; 3000], &[b' '; 3000]]),
                10_000,
                &budget,
                soon(),
            )
        };
        let started = std::time::Instant::now();
        assert_eq!(second().await.unwrap_err(), BodyError::Overloaded);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(budget.available_bytes(), 16 * 1024 - 6000);
        // Once the first is answered, the same body fits.
        drop(first);
        assert_eq!(second().await.unwrap().len(), 6000);
    }

    #[tokio::test]
    async fn while_reading_each_byte_counts_twice() {
        let budget = BodyBudget::new(1024 * 1024);
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, std::io::Error>>();
        let reading = tokio::spawn({
            let budget = budget.clone();
            async move { read(Body::new(StreamBody::new(rx)), 100_000, &budget, soon()).await }
        });
        for _ in 0..40 {
            tx.unbounded_send(Ok(Frame::data(Bytes::from_static(&[b'x'; 1000]))))
                .unwrap();
        }
        // The reader has taken all 40 pieces (it polls faster than this loop waits).
        for _ in 0..100 {
            if budget.available_bytes() == 1024 * 1024 - 80_000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(budget.available_bytes(), 1024 * 1024 - 80_000);
        drop(tx);
        let read = reading.await.unwrap().unwrap();
        assert_eq!(read.len(), 40_000);
        assert!(read.iter().all(|&b| b == b'x'));
        assert_eq!(budget.available_bytes(), 1024 * 1024 - 40_000);
    }

    #[tokio::test]
    async fn a_body_that_stops_sending_times_out_and_gives_back_its_share() {
        let budget = BodyBudget::new(64 * 1024);
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, std::io::Error>>();
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(&[b' '; 1000]))))
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(100);
        let result = read(Body::new(StreamBody::new(rx)), 10_000, &budget, deadline).await;
        assert_eq!(result.unwrap_err(), BodyError::Timeout);
        assert_eq!(budget.available_bytes(), 64 * 1024);
        drop(tx);
    }
}
