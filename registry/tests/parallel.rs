//! How many connections a blob download uses: one on a fast link, `parts_in_flight` once one
//! connection would take long; and a blob left short in the store is fetched again.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use futures::StreamExt;
use support::{options, random_model, serve};
use whale_registry::progress::NoProgress;
use whale_registry::{ModelRef, PullOptions, Puller, Store, server};

/// Counts blob requests in flight (the most at once), slowing bodies down while `slow` is set.
#[derive(Clone, Default)]
struct Gauge {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    slow: Arc<AtomicBool>,
}

/// Decrements the in-flight count when the response body is done or dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn gauged(State(gauge): State<Gauge>, request: Request, next: Next) -> Response {
    let is_blob = request.uri().path().contains("/blobs/");
    let response = next.run(request).await;
    if !is_blob {
        return response;
    }
    let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
    gauge.most.fetch_max(now, Ordering::SeqCst);
    let in_flight = InFlight(gauge.now.clone());
    let slow = gauge.slow.load(Ordering::Relaxed);
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().then(move |chunk| {
        let _held = &in_flight;
        async move {
            if slow {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            chunk
        }
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

async fn pull_with(slow: bool) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(dir.path().join("source")).unwrap();
    let model = random_model(24 * 1024 * 1024);
    model.put(&source, &ModelRef::parse("m:1").unwrap()).await;
    let gauge = Gauge::default();
    gauge.slow.store(slow, Ordering::Relaxed);
    let router =
        server::router(source).layer(middleware::from_fn_with_state(gauge.clone(), gauged));
    let name = ModelRef::parse(&format!("{}/library/m:1", serve(router).await)).unwrap();
    let target = Store::open(dir.path().join("target")).unwrap();
    Puller::new(PullOptions {
        parts_in_flight: 4,
        stall_timeout: Duration::from_secs(10),
        ..options()
    })
    .pull(&target, &name, &NoProgress)
    .await
    .unwrap();
    model.assert_in(&target, &name).await;
    gauge.most.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_link_uses_one_connection() {
    assert_eq!(pull_with(false).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_goes_parallel() {
    assert_eq!(pull_with(true).await, 4);
}

#[tokio::test]
async fn a_blob_left_short_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(dir.path().join("source")).unwrap();
    let model = random_model(3 * 1024 * 1024);
    let name = ModelRef::parse("m:1").unwrap();
    model.put(&source, &name).await;
    let addr = serve(server::router(source)).await;
    let remote = ModelRef::parse(&format!("{addr}/library/m:1")).unwrap();
    let target = Store::open(dir.path().join("target")).unwrap();
    let puller = Puller::new(options());
    puller.pull(&target, &remote, &NoProgress).await.unwrap();
    // What a machine crash before write-back can leave: the blob under its name, cut short.
    let (digest, bytes) = &model.blobs[0];
    let path = target.blob_path(digest);
    std::fs::write(&path, &bytes[..1000]).unwrap();
    assert!(!target.has_complete_blob(digest, bytes.len() as u64));
    puller.pull(&target, &remote, &NoProgress).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), *bytes);
    model.assert_in(&target, &remote).await;
}
