//! In-process tests of the webhook and metrics routers (no socket): routes, 404/405/413/415/408/503/500,
//! readiness states, metrics.

mod server_support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use server_support::{FakeHandler, fast_config};
use tower::ServiceExt;

use capi_calico_webhook::server::{AppState, ServerConfig, TlsSource, metrics_router, router};

fn config() -> ServerConfig {
    fast_config(TlsSource::SelfSigned {
        dir: "/nonexistent".into(),
    })
}

fn state(config: &ServerConfig) -> (Arc<FakeHandler>, AppState<FakeHandler>) {
    let handler = FakeHandler::new();
    let state = AppState::new(Arc::clone(&handler), config);
    state.health().set_certificate_loaded(true);
    (handler, state)
}

fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, String, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn reviews_are_routed_by_endpoint() {
    let cfg = config();
    let (handler, st) = state(&cfg);
    let app = router(st);
    let (s, ct, b) = send(&app, post("/mutate", "{}")).await;
    assert_eq!(
        (s, ct.as_str(), b.as_str()),
        (
            StatusCode::OK,
            "application/json",
            r#"{"endpoint":"mutate","len":2}"#
        )
    );
    let (s, _, b) = send(&app, post("/validate", "{\"a\":1}")).await;
    assert_eq!(
        (s, b.as_str()),
        (StatusCode::OK, r#"{"endpoint":"validate","len":7}"#)
    );
    // charset parameter accepted
    let req = Request::post("/validate")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::OK);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn wrong_method_path_and_content_type() {
    let cfg = config();
    let (handler, st) = state(&cfg);
    let app = router(st);
    let get = |p: &str| Request::get(p).body(Body::empty()).unwrap();
    assert_eq!(
        send(&app, get("/mutate")).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        send(&app, get("/validate")).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        send(&app, post("/nope", "{}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(send(&app, get("/metrics")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(&app, get("/healthz")).await.0, StatusCode::OK);
    let text = Request::post("/mutate")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    let (s, _, b) = send(&app, text).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(b.contains("application/json"));
    let none = Request::post("/mutate").body(Body::from("{}")).unwrap();
    let resp = app.clone().oneshot(none).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Refused before the body is read: the rest of it must not be taken for the next request.
    assert_eq!(
        resp.headers()
            .get(header::CONNECTION)
            .map(|v| v.to_str().unwrap()),
        Some("close")
    );
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0);
}

/// The router's own 404 and 405 leave a request's body unread: a request with a body (as hyper gives it: a declared
/// length or chunked) is answered with `Connection: close`, one without keeps its connection; 405 keeps `Allow`.
#[tokio::test]
async fn router_refusals_of_a_request_with_a_body_close_the_connection() {
    let cfg = config();
    let (_, st) = state(&cfg);
    for app in [router(st.clone()), metrics_router(st)] {
        let cases = [
            (
                "POST",
                "/nope",
                Some((header::CONTENT_LENGTH, "2")),
                StatusCode::NOT_FOUND,
                Some("close"),
            ),
            (
                "POST",
                "/nope",
                Some((header::TRANSFER_ENCODING, "chunked")),
                StatusCode::NOT_FOUND,
                Some("close"),
            ),
            (
                "PUT",
                "/healthz",
                Some((header::CONTENT_LENGTH, "2")),
                StatusCode::METHOD_NOT_ALLOWED,
                Some("close"),
            ),
            ("GET", "/nope", None, StatusCode::NOT_FOUND, None),
            (
                "POST",
                "/nope",
                Some((header::CONTENT_LENGTH, "0")),
                StatusCode::NOT_FOUND,
                None,
            ),
            (
                "PUT",
                "/healthz",
                None,
                StatusCode::METHOD_NOT_ALLOWED,
                None,
            ),
            (
                "GET",
                "/healthz",
                Some((header::CONTENT_LENGTH, "2")),
                StatusCode::OK,
                None,
            ),
        ];
        for (method, path, framing, status, connection) in cases {
            let mut req = Request::builder().method(method).uri(path);
            if let Some((name, value)) = framing.clone() {
                req = req.header(name, value);
            }
            let resp = app
                .clone()
                .oneshot(req.body(Body::from("{}")).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status(), status, "{method} {path} {framing:?}");
            assert_eq!(
                resp.headers()
                    .get(header::CONNECTION)
                    .map(|v| v.to_str().unwrap()),
                connection,
                "{method} {path} {framing:?}"
            );
            if status == StatusCode::METHOD_NOT_ALLOWED {
                assert!(
                    resp.headers().contains_key(header::ALLOW),
                    "{method} {path}"
                );
            }
        }
    }
}

#[tokio::test]
async fn oversized_bodies_get_413_and_serving_goes_on() {
    let cfg = config();
    let (handler, st) = state(&cfg);
    let app = router(st);
    let big = vec![b' '; cfg.max_body_bytes + 1];
    // declared length
    let (s, _, b) = send(&app, post("/mutate", big.clone())).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(b, "request body too large");
    // streamed, no length
    let chunks = big
        .chunks(4096)
        .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
        .collect::<Vec<_>>();
    let streamed = Body::from_stream(futures::stream::iter(chunks));
    assert_eq!(
        send(&app, post("/validate", streamed)).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // exactly the limit is fine
    let (s, _, _) = send(&app, post("/mutate", vec![b' '; cfg.max_body_bytes])).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn body_never_sent_gets_408() {
    let mut cfg = config();
    cfg.body_read_timeout = Duration::from_millis(200);
    let (_, st) = state(&cfg);
    let app = router(st);
    let stalled = futures::stream::iter([Ok::<_, std::io::Error>(b"{".to_vec())])
        .chain(futures::stream::pending());
    let (s, _, b) = send(&app, post("/mutate", Body::from_stream(stalled))).await;
    assert_eq!(
        (s, b.as_str()),
        (
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time"
        )
    );
}

use futures::StreamExt;

#[tokio::test]
async fn slow_handler_and_full_slots_get_503_and_a_panic_500() {
    let mut cfg = config();
    cfg.request_timeout = Duration::from_millis(400);
    cfg.body_read_timeout = Duration::from_millis(400);
    cfg.max_concurrent_reviews = 1;
    let (handler, st) = state(&cfg);
    let app = router(st);
    // The waiter arrives first but its body takes 250 ms; meanwhile a hanging review takes the only slot and keeps it
    // past the waiter's deadline.
    let waiter = tokio::spawn({
        let app = app.clone();
        async move {
            let body = futures::stream::once(async { Ok::<_, std::io::Error>(b"{".to_vec()) })
                .chain(futures::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    Ok(b"}".to_vec())
                }));
            send(&app, post("/mutate", Body::from_stream(body))).await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (s, _, b) = send(&app, post("/mutate", "hang")).await;
    assert_eq!(
        (s, b.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "review timed out")
    );
    let (s, _, b) = waiter.await.unwrap();
    assert_eq!(
        (s, b.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded, retry")
    );
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);

    let (s, _, _) = send(&app, post("/mutate", "panic")).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    // the slot was released in every case
    assert_eq!(send(&app, post("/mutate", "{}")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn readiness_needs_certificate_handler_and_no_shutdown() {
    let cfg = config();
    let handler = FakeHandler::new();
    let st = AppState::new(Arc::clone(&handler), &cfg);
    let app = router(st.clone());
    let admin = metrics_router(st.clone());
    let get = || Request::get("/readyz").body(Body::empty()).unwrap();
    let (s, _, b) = send(&app, get()).await;
    assert_eq!(
        (s, b.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid serving certificate"
        )
    );
    st.health().set_certificate_loaded(true);
    assert_eq!(send(&app, get()).await.0, StatusCode::OK);
    assert_eq!(send(&admin, get()).await.0, StatusCode::OK);
    handler.not_ready.store(true, Ordering::SeqCst);
    let (s, _, b) = send(&admin, get()).await;
    assert_eq!(
        (s, b.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "handler not ready")
    );
    handler.not_ready.store(false, Ordering::SeqCst);
    st.health().begin_shutdown();
    let (s, _, b) = send(&app, get()).await;
    assert_eq!(
        (s, b.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    );
    // liveness is unaffected
    let live = Request::get("/healthz").body(Body::empty()).unwrap();
    assert_eq!(send(&admin, live).await.0, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_decisions_denials_lookups_and_refusals() {
    let cfg = config();
    let (_, st) = state(&cfg);
    let app = router(st.clone());
    let admin = metrics_router(st);
    send(&app, post("/validate", "deny")).await;
    send(&app, post("/mutate", "{}")).await;
    send(&app, post("/mutate", vec![b' '; cfg.max_body_bytes + 1])).await;
    let (s, ct, text) = send(
        &admin,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    for needle in [
        r#"capi_calico_admission_requests_total{endpoint="validate",kind="cluster.x-k8s.io/v1beta2/Cluster",operation="CREATE",outcome="denied"} 1"#,
        r#"capi_calico_admission_requests_total{endpoint="mutate",kind="cluster.x-k8s.io/v1beta2/Cluster",operation="CREATE",outcome="allowed"} 1"#,
        r#"capi_calico_admission_requests_total{endpoint="mutate",kind="",operation="",outcome="error"} 1"#,
        r#"capi_calico_admission_denials_total{rule="block-size-range"} 1"#,
        r#"capi_calico_cluster_lookups_total{source="cache"} 1"#,
        r#"capi_calico_admission_duration_seconds_count{endpoint="mutate"} 2"#,
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

/// A body the shared body memory cannot cover is refused at once with 503 and `Retry-After: 1` (client-go retries a
/// 503 that says when; the webhooks have no side effects).
#[tokio::test]
async fn a_body_refused_for_memory_says_when_to_retry() {
    let mut cfg = config();
    // The budget is at least twice one body; one body in flight, counted twice, fills it. The held body must stay
    // held for the whole test, whatever the machine's load.
    cfg.max_body_memory_bytes = 2 * cfg.max_body_bytes;
    cfg.body_read_timeout = Duration::from_secs(30);
    cfg.request_timeout = Duration::from_secs(30);
    let (_, st) = state(&cfg);
    let app = router(st);
    // A first request sends a body of the largest size in one piece and then never ends: its memory stays taken.
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<axum::body::Bytes, std::io::Error>>();
    tx.unbounded_send(Ok(axum::body::Bytes::from(vec![b' '; cfg.max_body_bytes])))
        .unwrap();
    let holding = tokio::spawn({
        let app = app.clone();
        async move { app.oneshot(post("/mutate", Body::from_stream(rx))).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = app.clone().oneshot(post("/mutate", "{}")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    // Answered before its body was read: the connection is not kept for a next request.
    assert_eq!(
        resp.headers()
            .get(header::CONNECTION)
            .map(|v| v.to_str().unwrap()),
        Some("close")
    );
    drop(tx);
    let _ = holding.await;
}
