//! Read-only `/v2/` registry routes over a [`Store`], so any whale can be a pull source (a LAN
//! mirror) for another: `GET /v2/`, `GET|HEAD /v2/<ns>/<model>/manifests/<tag|digest>`,
//! `GET|HEAD /v2/<ns>/<model>/blobs/<digest>` with `Range` (tower-http's `ServeFile`).
//!
//! The store keeps a registry host in each manifest path, the URL does not: a request for
//! `<ns>/<model>:<tag>` is answered from `registry.ollama.ai/<ns>/<model>/<tag>` when present,
//! otherwise from the first other host (in sorted order) that has it. Blobs are content
//! addressed and served to any repository path. Errors use the OCI error JSON shape.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use crate::digest::Digest;
use crate::error::Error;
use crate::reference::{DEFAULT_HOST, DEFAULT_TAG, ModelRef};
use crate::store::Store;

/// Chunk size for blob bodies: large reads keep loopback pulls near disk/page-cache speed.
const BLOB_CHUNK: usize = 1024 * 1024;

const DIGEST_HEADER: &str = "docker-content-digest";

/// The `/v2/` routes serving `store`, read-only.
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/v2", get(version_check))
        .route("/v2/", get(version_check))
        .route("/v2/{*path}", get(content).fallback(unsupported))
        .with_state(store)
}

async fn version_check() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "application/json"),
            (
                axum::http::HeaderName::from_static("docker-distribution-api-version"),
                "registry/2.0",
            ),
        ],
        "{}",
    )
}

async fn unsupported() -> Response {
    oci_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "this registry is read-only",
    )
}

/// `{"errors":[{"code":…,"message":…}]}`.
fn oci_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]});
    (status, axum::Json(body)).into_response()
}

async fn content(
    State(store): State<Store>,
    Path(path): Path<String>,
    request: Request,
) -> Response {
    let (name, kind, target) = if let Some((name, target)) = path.rsplit_once("/manifests/") {
        (name, "manifests", target)
    } else if let Some((name, target)) = path.rsplit_once("/blobs/") {
        (name, "blobs", target)
    } else {
        return oci_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "unknown path");
    };
    let Some((namespace, model)) = name.split_once('/') else {
        return oci_error(
            StatusCode::NOT_FOUND,
            "NAME_INVALID",
            "expected <namespace>/<model>",
        );
    };
    let reference = match ModelRef::from_parts(DEFAULT_HOST, namespace, model, DEFAULT_TAG) {
        Ok(reference) => reference,
        Err(error) => return oci_error(StatusCode::NOT_FOUND, "NAME_INVALID", &error.to_string()),
    };
    if kind == "manifests" {
        manifest(&store, &reference, target).await
    } else {
        blob(&store, target, request).await
    }
}

async fn manifest(store: &Store, reference: &ModelRef, target: &str) -> Response {
    let unknown = || {
        oci_error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "manifest unknown",
        )
    };
    let Ok(models) = store.list().await else {
        return unknown();
    };
    let pinned = if target.starts_with("sha256:") {
        match Digest::parse(target) {
            Ok(digest) => Some(digest),
            Err(error) => {
                return oci_error(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    &error.to_string(),
                );
            }
        }
    } else {
        None
    };
    let mut candidates: Vec<_> = models
        .into_iter()
        .filter(|m| {
            m.reference
                .namespace()
                .eq_ignore_ascii_case(reference.namespace())
                && m.reference.model().eq_ignore_ascii_case(reference.model())
                && match &pinned {
                    Some(digest) => &m.manifest_digest == digest,
                    None => m.reference.tag().eq_ignore_ascii_case(target),
                }
        })
        .collect();
    // The default registry's copy first, then other hosts in sorted order (list() sorts).
    candidates.sort_by_key(|m| !m.reference.is_default_host());
    let Some(found) = candidates.first() else {
        return unknown();
    };
    let bytes = match store.read_manifest_bytes(&found.reference).await {
        Ok(bytes) => bytes,
        Err(Error::ModelNotFound { .. }) => return unknown(),
        Err(error) => {
            return oci_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                &error.to_string(),
            );
        }
    };
    let digest = Digest::of_bytes(&bytes).to_string();
    (
        [
            (CONTENT_TYPE, found.manifest.content_type().to_owned()),
            (CONTENT_LENGTH, bytes.len().to_string()),
            (DIGEST_HEADER.parse().expect("valid header name"), digest),
        ],
        bytes,
    )
        .into_response()
}

async fn blob(store: &Store, target: &str, request: Request) -> Response {
    let digest = match Digest::parse(target) {
        Ok(digest) => digest,
        Err(error) => {
            return oci_error(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                &error.to_string(),
            );
        }
    };
    if !store.has_blob(&digest) {
        return oci_error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
        );
    }
    debug_assert!(matches!(*request.method(), Method::GET | Method::HEAD));
    let service = ServeFile::new_with_mime(
        store.blob_path(&digest),
        &"application/octet-stream".parse().expect("valid mime"),
    )
    .with_buf_chunk_size(BLOB_CHUNK);
    match service.oneshot(request).await {
        Ok(response) => {
            let mut response = response.map(Body::new);
            if let Ok(value) = HeaderValue::from_str(&digest.to_string()) {
                response.headers_mut().insert(DIGEST_HEADER, value);
            }
            response
        }
        Err(error) => oci_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            &error.to_string(),
        ),
    }
}
