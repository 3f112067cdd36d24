//! Pull and push against real registries on loopback: a stock CNCF distribution registry
//! (`docker-registry`) and the crate's own `/v2/` server.

mod support;

use std::sync::Mutex;

use reqwest::StatusCode;
use support::{Distribution, Model, Received, options, random_model, serve};
use whale_registry::progress::NoProgress;
use whale_registry::{
    Digest, ModelRef, PullEvent, PullOptions, Puller, PushOptions, Pusher, Store, server,
};

/// Uploads a model with the plain registry API (not our Pusher): POST, PUT ?digest=, PUT
/// manifest.
async fn upload_raw(addr: std::net::SocketAddr, repository: &str, tag: &str, model: &Model) {
    let client = reqwest::Client::new();
    for (digest, bytes) in &model.blobs {
        let started = client
            .post(format!("http://{addr}/v2/{repository}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), StatusCode::ACCEPTED);
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        let mut url = reqwest::Url::parse(&format!("http://{addr}"))
            .unwrap()
            .join(&location)
            .unwrap();
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let put = client.put(url).body(bytes.clone()).send().await.unwrap();
        assert_eq!(
            put.status(),
            StatusCode::CREATED,
            "{}",
            put.text().await.unwrap()
        );
    }
    let put = client
        .put(format!("http://{addr}/v2/{repository}/manifests/{tag}"))
        .header("content-type", model.manifest.content_type())
        .body(model.manifest_bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.status(),
        StatusCode::CREATED,
        "{}",
        put.text().await.unwrap()
    );
}

#[tokio::test]
async fn pulls_from_distribution_then_pushes_and_pulls_back() {
    let registry = Distribution::start().await;
    let model = random_model(5 * 1024 * 1024 + 17);
    upload_raw(registry.addr, "library/tiny", "v1", &model).await;

    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path().join("first")).unwrap();
    let name = ModelRef::parse(&format!("{}/library/tiny:v1", registry.addr)).unwrap();
    let events = Mutex::new(Vec::<PullEvent>::new());
    let pulled = Puller::new(options())
        .pull(&first, &name, &|e: PullEvent| {
            events.lock().unwrap().push(e);
        })
        .await
        .unwrap();
    assert_eq!(pulled, model.manifest);
    model.assert_in(&first, &name).await;
    let statuses: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.status.clone())
        .collect();
    assert_eq!(statuses.first().unwrap(), "pulling manifest");
    let weights = &model.blobs[0].0;
    assert!(statuses.contains(&format!("pulling {}", weights.short())));
    assert_eq!(
        &statuses[statuses.len() - 3..],
        ["verifying sha256 digest", "writing manifest", "success"]
    );

    // Push under a new name with our Pusher, then pull that into a second store.
    let pushed = ModelRef::parse(&format!("{}/whale/pushed:v2", registry.addr)).unwrap();
    first.copy(&name, &pushed).await.unwrap();
    let push_events = Mutex::new(Vec::<PullEvent>::new());
    Pusher::new(PushOptions { insecure: true })
        .push(&first, &pushed, &|e: PullEvent| {
            push_events.lock().unwrap().push(e);
        })
        .await
        .unwrap();
    let push_statuses: Vec<String> = push_events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.status.clone())
        .collect();
    assert_eq!(push_statuses.first().unwrap(), "retrieving manifest");
    assert!(push_statuses.contains(&format!("pushing {}", weights.short())));
    assert_eq!(
        &push_statuses[push_statuses.len() - 2..],
        ["pushing manifest", "success"]
    );

    let second = Store::open(dir.path().join("second")).unwrap();
    Puller::new(options())
        .pull(&second, &pushed, &NoProgress)
        .await
        .unwrap();
    model.assert_in(&second, &pushed).await;
    let listed = second.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].manifest_digest,
        Digest::of_bytes(&model.manifest_bytes)
    );

    // A second push finds every blob present (HEAD) and still succeeds.
    Pusher::new(PushOptions { insecure: true })
        .push(&first, &pushed, &NoProgress)
        .await
        .unwrap();
    // Without insecure, plain http is refused.
    let err = Puller::new(PullOptions {
        insecure: false,
        ..options()
    })
    .pull(&second, &pushed, &NoProgress)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("https://"), "{err}");
}

#[tokio::test]
async fn pulls_from_our_own_v2_server() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(dir.path().join("source")).unwrap();
    let model = random_model(3 * 1024 * 1024 + 5);
    // Stored under another host: the server must still find it by <ns>/<model>:<tag>.
    model
        .put(
            &source,
            &ModelRef::parse("hf.co/someone/small:Q4_K_M").unwrap(),
        )
        .await;
    let addr = serve(server::router(source.clone())).await;

    let target = Store::open(dir.path().join("target")).unwrap();
    let name = ModelRef::parse(&format!("{addr}/someone/small:Q4_K_M")).unwrap();
    let received = Received::default();
    Puller::new(options())
        .pull(&target, &name, &received)
        .await
        .unwrap();
    model.assert_in(&target, &name).await;
    // Every blob's bytes are reported received once, however many parts carried them.
    let blobs: u64 = model.blobs.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(received.bytes(), blobs);

    // Pinned by manifest digest: every blob is already there, so nothing is received.
    let digest = Digest::of_bytes(&model.manifest_bytes);
    let pinned = ModelRef::parse(&format!("{addr}/someone/small:pinned@{digest}")).unwrap();
    let received = Received::default();
    Puller::new(options())
        .pull(&target, &pinned, &received)
        .await
        .unwrap();
    assert_eq!(received.bytes(), 0);
}

#[tokio::test]
async fn our_server_speaks_the_registry_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let model = random_model(100_000);
    model
        .put(&store, &ModelRef::parse("deepseek-r1:1.5b").unwrap())
        .await;
    let addr = serve(server::router(store)).await;
    let client = reqwest::Client::new();

    let root = client
        .get(format!("http://{addr}/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), StatusCode::OK);
    assert_eq!(root.text().await.unwrap(), "{}");

    let url = format!("http://{addr}/v2/library/deepseek-r1/manifests/1.5b");
    let manifest = client.get(&url).send().await.unwrap();
    assert_eq!(manifest.status(), StatusCode::OK);
    assert_eq!(
        manifest.headers()["content-type"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest.headers()["docker-content-digest"],
        Digest::of_bytes(&model.manifest_bytes).to_string().as_str()
    );
    assert_eq!(manifest.bytes().await.unwrap(), model.manifest_bytes);
    let head = client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"],
        model.manifest_bytes.len().to_string().as_str()
    );

    let (digest, bytes) = &model.blobs[0];
    let blob_url = format!("http://{addr}/v2/library/deepseek-r1/blobs/{digest}");
    let ranged = client
        .get(&blob_url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        ranged.headers()["content-range"],
        format!("bytes 10-19/{}", bytes.len()).as_str()
    );
    assert_eq!(ranged.bytes().await.unwrap(), bytes[10..20]);
    let head = client.head(&blob_url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"],
        bytes.len().to_string().as_str()
    );

    for (path, status, code) in [
        (
            "library/deepseek-r1/manifests/nope",
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "library/deepseek-r1/blobs/sha256:bad",
            400,
            "DIGEST_INVALID",
        ),
        (
            "library/x/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
            404,
            "BLOB_UNKNOWN",
        ),
        ("library/-x/manifests/t", 404, "NAME_INVALID"),
        ("only-one-part/manifests/t", 404, "NAME_INVALID"),
    ] {
        let response = client
            .get(format!("http://{addr}/v2/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], code, "{path}");
    }
    let put = client.put(&url).body("x").send().await.unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn mirror_is_tried_first_for_the_default_registry() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(dir.path().join("source")).unwrap();
    let model = random_model(200_000);
    let name = ModelRef::parse("deepseek-r1:7b").unwrap();
    model.put(&source, &name).await;
    let addr = serve(server::router(source)).await;

    let target = Store::open(dir.path().join("target")).unwrap();
    let puller = Puller::new(PullOptions {
        insecure: false, // the mirror's own scheme (http) is used as configured
        mirror: Some(format!("http://{addr}").parse().unwrap()),
        ..options()
    });
    puller.pull(&target, &name, &NoProgress).await.unwrap();
    model.assert_in(&target, &name).await;
}
