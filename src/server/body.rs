//! Reading a request body into memory under a server-wide budget.
//!
//! Each body is bounded by `max_body_bytes`, but a thousand connections each sending most of a 7 MiB body would
//! still hold gigabytes before any of them reached the handler. So the buffers of all bodies being read or handled
//! share one [`BodyBudget`] (`max_body_memory_bytes`): a body reserves memory from it as its data arrives, before
//! the buffer grows, and returns it when the request is answered. A client has to send bytes to hold any of the
//! budget; a client that stops sending is cut by the body deadline and gives its share back.
//!
//! When the budget is spent, a body waits for its next share until the body deadline, then gets 503: the server
//! stays up and answers again as soon as the other bodies are done, instead of being killed for memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout_at};

/// The unit the budget counts in.
const UNIT: usize = 1024;

/// Memory that request bodies may hold at once, shared by all connections.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
}

impl BodyBudget {
    /// A budget of `bytes` (rounded up to whole KiB, at least one).
    pub fn new(bytes: usize) -> Self {
        let units = bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            units: Arc::new(Semaphore::new(units)),
        }
    }

    /// Bytes not reserved right now.
    pub fn available_bytes(&self) -> usize {
        self.units.available_permits().saturating_mul(UNIT)
    }
}

/// A body read into memory, with its share of the budget (returned when this is dropped).
#[derive(Debug)]
pub struct Buffered {
    bytes: Bytes,
    _reserved: Option<OwnedSemaphorePermit>,
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
/// The pieces are kept as they arrive (hyper's buffers, no copy and no growing buffer to leave garbage behind) and
/// joined once at the end; the reservation counts each byte twice, for the pieces and the joined copy, so the
/// join never waits. A body of one piece is not copied at all.
pub async fn read(
    body: Body,
    max: usize,
    budget: &BodyBudget,
    deadline: Instant,
) -> Result<Buffered, BodyError> {
    // One timer for the whole read; whether it fired while the body waited for memory decides 503 or 408.
    let waiting_for_memory = AtomicBool::new(false);
    match timeout_at(deadline, read_all(body, max, budget, &waiting_for_memory)).await {
        Ok(result) => result,
        Err(_) if waiting_for_memory.load(Ordering::Relaxed) => Err(BodyError::Overloaded),
        Err(_) => Err(BodyError::Timeout),
    }
}

async fn read_all(
    mut body: Body,
    max: usize,
    budget: &BodyBudget,
    waiting_for_memory: &AtomicBool,
) -> Result<Buffered, BodyError> {
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    let mut reserved: Option<OwnedSemaphorePermit> = None;
    let mut reserved_units = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyError::Read)?.into_data() else {
            continue; // trailers
        };
        len += data.len();
        if len > max {
            return Err(BodyError::TooLarge);
        }
        let units = (2 * len).div_ceil(UNIT);
        if units > reserved_units {
            let more = u32::try_from(units - reserved_units).map_err(|_| BodyError::TooLarge)?;
            let semaphore = Arc::clone(&budget.units);
            let permit = match Arc::clone(&semaphore).try_acquire_many_owned(more) {
                Ok(permit) => permit,
                Err(_) => {
                    waiting_for_memory.store(true, Ordering::Relaxed);
                    // The budget is never closed: an error cannot happen, and would read as overload.
                    let permit = semaphore
                        .acquire_many_owned(more)
                        .await
                        .map_err(|_| BodyError::Overloaded)?;
                    waiting_for_memory.store(false, Ordering::Relaxed);
                    permit
                }
            };
            match reserved.as_mut() {
                Some(held) => held.merge(permit),
                None => reserved = Some(permit),
            }
            reserved_units = units;
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
    async fn reads_the_body_and_returns_its_share_when_dropped() {
        let budget = BodyBudget::new(64 * 1024);
        let body = chunked(vec![b"{\"a\":", &[b'1'; 3000], b"}"]);
        let read = read(body, 10_000, &budget, soon()).await.unwrap();
        assert_eq!(read.len(), 5 + 3000 + 1);
        assert_eq!(&read[..5], b"{\"a\":");
        assert!(budget.available_bytes() < 64 * 1024);
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
    async fn a_spent_budget_makes_the_next_body_wait_then_refuses_it() {
        // 16 KiB: the first body reserves 12 KiB (twice its 6000 bytes), the second would need 8 more.
        let budget = BodyBudget::new(16 * 1024);
        let first = read(chunked(vec![&[b' '; 6000]]), 10_000, &budget, soon())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(200);
        let started = std::time::Instant::now();
        let second = read(chunked(vec![&[b' '; 4000]]), 10_000, &budget, deadline).await;
        assert_eq!(second.unwrap_err(), BodyError::Overloaded);
        assert!(started.elapsed() >= Duration::from_millis(150));
        // Once the first is answered, the same body fits.
        drop(first);
        let second = read(chunked(vec![&[b' '; 4000]]), 10_000, &budget, soon()).await;
        assert_eq!(second.unwrap().len(), 4000);
    }

    #[tokio::test]
    async fn the_reservation_is_twice_the_data() {
        let budget = BodyBudget::new(1024 * 1024);
        let chunks: Vec<&'static [u8]> = (0..40).map(|_| &[b'x'; 1000][..]).collect();
        let read = read(chunked(chunks), 1024 * 1024, &budget, soon())
            .await
            .unwrap();
        assert_eq!(read.len(), 40_000);
        assert!(read.iter().all(|&b| b == b'x'));
        let reserved = 1024 * 1024 - budget.available_bytes();
        assert_eq!(reserved, 80_000usize.div_ceil(UNIT) * UNIT);
    }
}
