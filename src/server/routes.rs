//! The HTTP routes: `POST /mutate`, `POST /validate`, `GET /healthz`, `GET /readyz` on the webhook port, and
//! `GET /metrics`, `/healthz`, `/readyz` on the metrics port.
//!
//! A review request goes through, in order: content type (`application/json` only, parameters such as
//! `charset` allowed, else 415), declared length (over the limit: 413 at once), body read (bounded in size: 413,
//! in time: 408, and by the memory all bodies share: 503, see [`super::body`]), a handler slot (bounded
//! concurrency; waiting is bounded by the request deadline: 503), the
//! handler (bounded by the request deadline: 503; a panic: 500). Transport refusals answer a short `text/plain`
//! reason, are logged at warn and counted as `outcome="error"`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::FutureExt;
use tokio::sync::Semaphore;

use super::ServerConfig;
use super::body::{self, BodyBudget};
use super::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE};
use super::tls::unix_now;
use crate::admission::api::{Endpoint, ReviewHandler};

/// Liveness/readiness flags the transport owns (the handler's own readiness is asked on each probe).
#[derive(Debug, Default)]
pub struct Health {
    certificate_loaded: AtomicBool,
    /// Not-after of the served certificate (Unix seconds); 0 when unknown.
    certificate_not_after: AtomicI64,
    shutting_down: AtomicBool,
}

impl Health {
    pub fn set_certificate_loaded(&self, loaded: bool) {
        self.certificate_loaded.store(loaded, Ordering::SeqCst);
    }

    /// A certificate valid until `not_after` (Unix seconds) is being served.
    pub fn set_certificate(&self, not_after: i64) {
        self.certificate_not_after
            .store(not_after, Ordering::SeqCst);
        self.certificate_loaded.store(true, Ordering::SeqCst);
    }

    /// A certificate is loaded and, when its expiry is known, not expired.
    pub fn certificate_loaded(&self) -> bool {
        let not_after = self.certificate_not_after.load(Ordering::SeqCst);
        self.certificate_loaded.load(Ordering::SeqCst) && (not_after == 0 || not_after > unix_now())
    }

    /// Readiness turns false for good.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_body_bytes: usize,
    body_read_timeout: Duration,
    request_timeout: Duration,
}

/// Everything the routes share.
pub struct AppState<H> {
    handler: Arc<H>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    permits: Arc<Semaphore>,
    bodies: BodyBudget,
    limits: Limits,
}

impl<H> Clone for AppState<H> {
    fn clone(&self) -> Self {
        Self {
            handler: Arc::clone(&self.handler),
            metrics: Arc::clone(&self.metrics),
            health: Arc::clone(&self.health),
            permits: Arc::clone(&self.permits),
            bodies: self.bodies.clone(),
            limits: self.limits,
        }
    }
}

impl<H: ReviewHandler> AppState<H> {
    /// Fresh state (new metrics registry, no certificate loaded yet) with the limits of `config`.
    pub fn new(handler: Arc<H>, config: &ServerConfig) -> Self {
        Self {
            handler,
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
            permits: Arc::new(Semaphore::new(config.max_concurrent_reviews.max(1))),
            bodies: BodyBudget::new(
                config
                    .max_body_memory_bytes
                    .max(config.max_body_bytes.saturating_mul(2)),
            ),
            limits: Limits {
                max_body_bytes: config.max_body_bytes,
                body_read_timeout: config.body_read_timeout,
                request_timeout: config.request_timeout,
            },
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Why the server is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.health.shutting_down() {
            Some("shutting down")
        } else if !self.health.certificate_loaded() {
            Some("no valid serving certificate")
        } else if !self.handler.ready() {
            Some("handler not ready")
        } else {
            None
        }
    }
}

/// The webhook router: `/mutate`, `/validate`, `/healthz`, `/readyz`. Unknown paths 404, wrong methods 405.
pub fn router<H: ReviewHandler>(state: AppState<H>) -> Router {
    Router::new()
        .route("/mutate", post(mutate::<H>))
        .route("/validate", post(validate::<H>))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<H>))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(close_if_body_unread))
        .with_state(state)
}

/// The metrics router: `/metrics` (OpenMetrics text), `/healthz`, `/readyz`.
pub fn metrics_router<H: ReviewHandler>(state: AppState<H>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<H>))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<H>))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(close_if_body_unread))
        .with_state(state)
}

/// The router's own refusals (404 for an unknown path, 405 for a wrong method) never read the request's body: when
/// the request has one, they say `Connection: close` too, as the review route's early refusals do (see [`closing`]).
async fn close_if_body_unread(request: Request, next: axum::middleware::Next) -> Response {
    let has_body = declared_length(request.headers()).is_some_and(|n| n > 0)
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    let response = next.run(request).await;
    match response.status() {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED if has_body => closing(response),
        _ => response,
    }
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found")
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok")
}

async fn readyz<H: ReviewHandler>(State(state): State<AppState<H>>) -> Response {
    match state.not_ready_reason() {
        None => text(StatusCode::OK, "ready"),
        Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

async fn metrics<H: ReviewHandler>(State(state): State<AppState<H>>) -> Response {
    match state.metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics"),
    }
}

async fn mutate<H: ReviewHandler>(State(state): State<AppState<H>>, request: Request) -> Response {
    review(state, Endpoint::Mutate, request).await
}

async fn validate<H: ReviewHandler>(
    State(state): State<AppState<H>>,
    request: Request,
) -> Response {
    review(state, Endpoint::Validate, request).await
}

fn text(status: StatusCode, reason: &'static str) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        reason,
    )
        .into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

impl<H: ReviewHandler> AppState<H> {
    fn refuse(
        &self,
        endpoint: Endpoint,
        started: Instant,
        status: StatusCode,
        reason: &'static str,
    ) -> Response {
        let elapsed = started.elapsed();
        self.metrics.observe_rejection(endpoint, elapsed);
        tracing::warn!(
            endpoint = endpoint.as_str(),
            status = status.as_u16(),
            reason,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "admission request refused by the transport"
        );
        text(status, reason)
    }
}

async fn review<H: ReviewHandler>(
    state: AppState<H>,
    endpoint: Endpoint,
    request: Request,
) -> Response {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + state.limits.request_timeout);
    let max = state.limits.max_body_bytes;

    if !is_json(request.headers()) {
        return closing(state.refuse(
            endpoint,
            started,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type must be application/json",
        ));
    }
    if declared_length(request.headers()).is_some_and(|n| n > max as u64) {
        return closing(state.refuse(
            endpoint,
            started,
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        ));
    }

    let body_deadline = deadline.min(tokio::time::Instant::now() + state.limits.body_read_timeout);
    let body = match body::read(request.into_body(), max, &state.bodies, body_deadline).await {
        Ok(body) => body,
        Err(e) => {
            let (status, reason) = e.answer();
            let mut response = closing(state.refuse(endpoint, started, status, reason));
            if matches!(e, body::BodyError::Overloaded) {
                // Refused at once: client-go retries a 503 that says when (within the webhook's own timeout), and
                // the webhooks have no side effects.
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            return response;
        }
    };

    let _permit =
        match tokio::time::timeout_at(deadline, Arc::clone(&state.permits).acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                return state.refuse(
                    endpoint,
                    started,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded, retry",
                );
            }
        };

    let answer = AssertUnwindSafe(state.handler.review(endpoint, &body)).catch_unwind();
    let reply = match tokio::time::timeout_at(deadline, answer).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_panic)) => {
            tracing::error!(endpoint = endpoint.as_str(), "admission handler panicked");
            return state.refuse(
                endpoint,
                started,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            );
        }
        Err(_) => {
            return state.refuse(
                endpoint,
                started,
                StatusCode::SERVICE_UNAVAILABLE,
                "review timed out",
            );
        }
    };

    let elapsed = started.elapsed();
    let d = &reply.decision;
    state.metrics.observe_decision(endpoint, d, elapsed);
    tracing::info!(
        endpoint = endpoint.as_str(),
        uid = %capped(&d.uid),
        kind = %capped(&d.kind),
        namespace = %capped(&d.namespace),
        name = %capped(&d.name),
        operation = %d.operation,
        outcome = d.outcome.as_str(),
        denied_rules = %d.denied_rules.join(","),
        lookup = %d.lookup,
        status = reply.status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "admission decision"
    );
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from(reply.body),
    )
        .into_response()
}

/// `response` with `Connection: close`, for an answer given before the request's body was read to its end: the rest
/// of it would otherwise be read as the start of the next request on an HTTP/1 keep-alive connection. (HTTP/2 has no
/// such header; hyper leaves it out there.)
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The longest request-supplied text put in a log line (a Kubernetes name is at most 253 characters; the API server's
/// uids are 36): a client talking to the port directly could send megabytes.
const MAX_LOGGED_CHARS: usize = 253;

/// `text` cut to [`MAX_LOGGED_CHARS`] characters, marked with `...` when cut.
fn capped(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(MAX_LOGGED_CHARS) {
        None => std::borrow::Cow::Borrowed(text),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}...", &text[..end])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_certificate_is_not_ready() {
        let h = Health::default();
        assert!(!h.certificate_loaded());
        h.set_certificate(unix_now() + 60);
        assert!(h.certificate_loaded());
        h.set_certificate(unix_now() - 1);
        assert!(!h.certificate_loaded());
    }

    #[test]
    fn logged_request_text_is_capped_on_a_character_boundary() {
        assert_eq!(capped("wl-1"), "wl-1");
        let exact = "é".repeat(MAX_LOGGED_CHARS);
        assert_eq!(capped(&exact), exact.as_str());
        let long = format!("{exact}é{}", "x".repeat(7 * 1024 * 1024));
        assert_eq!(capped(&long), format!("{exact}..."));
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for (v, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/json-patch+json", false),
            ("text/plain", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            assert_eq!(is_json(&h), ok, "{v}");
        }
    }
}
