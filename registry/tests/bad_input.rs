//! Hostile and broken registries: each case ends in a clear error, leaves nothing outside the
//! store root and no manifest for the incomplete model, and a retry against a good server
//! then succeeds. Also the protocol variants a real registry may use (token challenge,
//! redirects, 200 instead of 206).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use support::{Model, files_under, options, random_model, serve};
use tower::ServiceExt as _;
use whale_registry::progress::NoProgress;
use whale_registry::{Error, ModelRef, Puller, Store, server};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Good,
    EscapingDigest,
    MalformedDigest,
    WrongBytes,
    LongerBlob,
    ShorterBlob,
    Stall,
    DropConnection,
    RedirectToFtp,
    HugeManifest,
    HugeChunkedManifest,
    UnauthorizedNoChallenge,
    UnauthorizedBasic,
    TokenChallenge,
    RedirectElsewhere,
    IgnoreRange,
}

#[derive(Clone)]
struct Faulty {
    good: Router,
    model: Arc<Model>,
    mode: Arc<Mutex<Mode>>,
}

const TOKEN: &str = "sesame";

/// The part of `bytes` a `Range: bytes=a-b` asks for, as a 206 (or all of it as a 200).
fn ranged(bytes: &[u8], headers: &HeaderMap) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut out = HeaderMap::new();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()));
    match range {
        Some((start, end)) => {
            out.insert(
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{}", bytes.len())
                    .parse()
                    .unwrap(),
            );
            (
                StatusCode::PARTIAL_CONTENT,
                out,
                bytes[start..=end].to_vec(),
            )
        }
        None => (StatusCode::OK, out, bytes.to_vec()),
    }
}

async fn handle(State(faulty): State<Faulty>, request: Request) -> Response {
    let mode = *faulty.mode.lock().unwrap();
    let path = request.uri().path().to_owned();
    let weights = &faulty.model.blobs[0];
    let is_weights = path.ends_with(&format!("/blobs/{}", weights.0));
    let is_manifest = path.contains("/manifests/");
    let manifest_with = |digest: &str| {
        let text = String::from_utf8(faulty.model.manifest_bytes.clone()).unwrap();
        text.replace(&weights.0.to_string(), digest).into_response()
    };
    match mode {
        Mode::EscapingDigest if is_manifest => manifest_with("sha256:../../../../../tmp/escaped"),
        Mode::MalformedDigest if is_manifest => manifest_with("sha256:NOT-A-DIGEST"),
        Mode::HugeManifest if is_manifest => vec![b' '; 5 * 1024 * 1024].into_response(),
        Mode::HugeChunkedManifest if is_manifest => Body::from_stream(
            futures::stream::repeat_with(|| {
                Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 65536]))
            })
            .take(100),
        )
        .into_response(),
        Mode::UnauthorizedNoChallenge => StatusCode::UNAUTHORIZED.into_response(),
        Mode::UnauthorizedBasic => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"registry\"")],
        )
            .into_response(),
        Mode::TokenChallenge if path == "/token" => {
            let query = request.uri().query().unwrap_or_default();
            assert!(query.contains("service=faulty"), "{query}");
            assert!(query.contains("scope=repository"), "{query}");
            axum::Json(serde_json::json!({ "token": TOKEN })).into_response()
        }
        Mode::TokenChallenge
            if request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                != Some(&format!("Bearer {TOKEN}")) =>
        {
            let host = request.headers()[header::HOST].to_str().unwrap();
            let challenge = format!(
                "Bearer realm=\"http://{host}/token\",service=\"faulty\",scope=\"repository:library/m:pull\""
            );
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, challenge)],
            )
                .into_response()
        }
        Mode::WrongBytes if is_weights => {
            let (status, headers, mut body) = ranged(&weights.1, request.headers());
            for byte in body.iter_mut().step_by(1000) {
                *byte ^= 0xff;
            }
            (status, headers, body).into_response()
        }
        Mode::LongerBlob if is_weights => {
            let mut body = weights.1.clone();
            body.extend_from_slice(b"trailing garbage");
            body.into_response()
        }
        Mode::ShorterBlob if is_weights => {
            weights.1[..weights.1.len() - 100].to_vec().into_response()
        }
        Mode::Stall | Mode::DropConnection if is_weights => {
            let (status, headers, body) = ranged(&weights.1, request.headers());
            let half = Bytes::from(body[..body.len() / 2].to_vec());
            let first = futures::stream::once(async move { Ok::<_, std::io::Error>(half) });
            let body = if mode == Mode::Stall {
                Body::from_stream(first.chain(futures::stream::pending()))
            } else {
                Body::from_stream(first.chain(futures::stream::once(async {
                    Err(std::io::Error::other("connection dropped"))
                })))
            };
            (status, headers, body).into_response()
        }
        Mode::RedirectToFtp if is_weights => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, "ftp://127.0.0.1/blob")],
        )
            .into_response(),
        Mode::RedirectElsewhere if is_weights && path.starts_with("/v2/library/m/") => {
            let to = path.replace("/v2/library/m/", "/v2/cdn/elsewhere/");
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response()
        }
        Mode::IgnoreRange if is_weights => weights.1.clone().into_response(),
        _ => faulty.good.clone().oneshot(request).await.unwrap(),
    }
}

/// A faulty server in front of a good one, and a target store inside a temp dir that must
/// hold nothing but the store.
struct Harness {
    dir: tempfile::TempDir,
    target: Store,
    name: ModelRef,
    model: Arc<Model>,
    mode: Arc<Mutex<Mode>>,
}

impl Harness {
    async fn new(mode: Mode) -> Harness {
        let source_dir = tempfile::tempdir().unwrap();
        let source = Store::open(source_dir.path()).unwrap();
        let model = Arc::new(random_model(3 * 1024 * 1024 + 1234));
        model.put(&source, &ModelRef::parse("m:t").unwrap()).await;
        std::mem::forget(source_dir); // lives as long as the server task
        let mode = Arc::new(Mutex::new(mode));
        let faulty = Faulty {
            good: server::router(source),
            model: model.clone(),
            mode: mode.clone(),
        };
        let addr = serve(Router::new().fallback(handle).with_state(faulty)).await;
        let dir = tempfile::tempdir().unwrap();
        let target = Store::open(dir.path().join("root")).unwrap();
        Harness {
            dir,
            target,
            name: ModelRef::parse(&format!("{addr}/library/m:t")).unwrap(),
            model,
            mode,
        }
    }

    async fn pull(&self) -> whale_registry::Result<()> {
        Puller::new(options())
            .pull(&self.target, &self.name, &NoProgress)
            .await
            .map(drop)
    }

    /// Fails the pull, checks the aftermath, then succeeds against the good server.
    async fn fails_then_recovers(&self, check: impl Fn(&Error) -> bool) {
        let error = tokio::time::timeout(Duration::from_mins(1), self.pull())
            .await
            .expect("the pull ends")
            .expect_err("the pull fails");
        assert!(check(&error), "unexpected error: {error:?}");
        assert!(!error.to_string().is_empty());
        let outside: Vec<String> = files_under(self.dir.path())
            .into_iter()
            .filter(|f| !f.starts_with("root/"))
            .collect();
        assert!(outside.is_empty(), "files outside the root: {outside:?}");
        assert!(!std::path::Path::new("/tmp/escaped").exists());
        assert!(
            files_under(&self.target.root().join("manifests")).is_empty(),
            "no manifest for an incomplete model"
        );
        assert!(matches!(
            self.target.read_manifest(&self.name).await,
            Err(Error::ModelNotFound { .. })
        ));
        *self.mode.lock().unwrap() = Mode::Good;
        self.pull()
            .await
            .expect("a retry against a good server succeeds");
        self.model.assert_in(&self.target, &self.name).await;
        let leftovers: Vec<String> = files_under(&self.target.root().join("blobs"))
            .into_iter()
            .filter(|f| f.contains("partial") || f.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    async fn succeeds(&self) {
        self.pull().await.unwrap();
        self.model.assert_in(&self.target, &self.name).await;
    }
}

#[tokio::test]
async fn manifest_digest_escaping_the_store() {
    Harness::new(Mode::EscapingDigest)
        .await
        .fails_then_recovers(
            |e| matches!(e, Error::InvalidManifest { reason } if reason.contains("invalid digest")),
        )
        .await;
}

#[tokio::test]
async fn manifest_with_a_malformed_digest() {
    Harness::new(Mode::MalformedDigest)
        .await
        .fails_then_recovers(
            |e| matches!(e, Error::InvalidManifest { reason } if reason.contains("invalid digest")),
        )
        .await;
}

#[tokio::test]
async fn blob_bytes_that_do_not_match_the_digest() {
    Harness::new(Mode::WrongBytes)
        .await
        .fails_then_recovers(|e| matches!(e, Error::DigestMismatch { .. }))
        .await;
}

#[tokio::test]
async fn blob_longer_than_declared() {
    Harness::new(Mode::LongerBlob)
        .await
        .fails_then_recovers(
            |e| matches!(e, Error::SizeMismatch { actual, expected, .. } if actual > expected),
        )
        .await;
}

#[tokio::test]
async fn blob_shorter_than_declared() {
    Harness::new(Mode::ShorterBlob)
        .await
        .fails_then_recovers(
            |e| matches!(e, Error::SizeMismatch { actual, expected, .. } if actual < expected),
        )
        .await;
}

#[tokio::test]
async fn server_that_stalls_mid_part() {
    Harness::new(Mode::Stall)
        .await
        .fails_then_recovers(
            |e| matches!(e, Error::RetriesExhausted { last, .. } if last.contains("stalled")),
        )
        .await;
}

#[tokio::test]
async fn server_that_drops_the_connection_mid_part() {
    Harness::new(Mode::DropConnection)
        .await
        .fails_then_recovers(|e| matches!(e, Error::RetriesExhausted { .. }))
        .await;
}

#[tokio::test]
async fn redirect_to_a_non_http_scheme() {
    Harness::new(Mode::RedirectToFtp)
        .await
        .fails_then_recovers(|e| {
            matches!(e, Error::InsecureOrUnsupportedUrl { url, .. } if url.starts_with("ftp://"))
        })
        .await;
}

#[tokio::test]
async fn oversized_manifest() {
    for mode in [Mode::HugeManifest, Mode::HugeChunkedManifest] {
        Harness::new(mode)
            .await
            .fails_then_recovers(|e| matches!(e, Error::ManifestTooLarge { .. }))
            .await;
    }
}

#[tokio::test]
async fn unauthorized_without_a_usable_challenge() {
    for mode in [Mode::UnauthorizedNoChallenge, Mode::UnauthorizedBasic] {
        Harness::new(mode)
            .await
            .fails_then_recovers(|e| {
                matches!(e, Error::Unauthorized { reason, .. } if reason.contains("WWW-Authenticate"))
            })
            .await;
    }
}

#[tokio::test]
async fn bearer_token_challenge_is_answered() {
    Harness::new(Mode::TokenChallenge).await.succeeds().await;
}

#[tokio::test]
async fn blob_redirects_are_followed() {
    Harness::new(Mode::RedirectElsewhere).await.succeeds().await;
}

#[tokio::test]
async fn a_plain_200_for_a_ranged_request_is_read_as_one_stream() {
    Harness::new(Mode::IgnoreRange).await.succeeds().await;
}

#[tokio::test]
async fn a_dropped_connection_that_recovers_resumes_the_part() {
    // One drop, then good: the retry continues the part and the pull succeeds.
    let harness = Harness::new(Mode::DropConnection).await;
    let mode = harness.mode.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        *mode.lock().unwrap() = Mode::Good;
    });
    harness.succeeds().await;
}

#[tokio::test]
async fn https_to_a_plain_http_registry_fails_at_once() {
    // Production retry settings: a handshake that cannot succeed must not be retried for
    // half a minute.
    let harness = Harness::new(Mode::Good).await;
    let started = std::time::Instant::now();
    let error = Puller::new(whale_registry::PullOptions::default())
        .pull(&harness.target, &harness.name, &NoProgress)
        .await
        .expect_err("https to a plain-http server fails");
    assert!(matches!(error, Error::Tls { .. }), "{error:?}");
    assert!(error.to_string().contains("insecure"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
