//! The client against a real loopback HTTP server (axum on port 0) that chunks NDJSON oddly,
//! fails mid-stream, and answers 404/500.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use whale_api::{ChatRequest, Client, Error, GenerateRequest, Message, PullRequest, ShowRequest};

/// Lines split at awkward places, including inside a multi-byte character.
fn odd_chunks() -> Response {
    let text = concat!(
        r#"{"model":"m","created_at":"t","response":"Wha","done":false}"#,
        "\n",
        r#"{"model":"m","created_at":"t","response":"lé ｜","done":false}"#,
        "\n\n",
        r#"{"model":"m","created_at":"t","response":"","done":true,"done_reason":"stop","eval_count":2}"#
    );
    let bytes = text.as_bytes().to_vec();
    let pieces: Vec<Vec<u8>> = bytes.chunks(7).map(<[u8]>::to_vec).collect();
    let stream = futures::stream::iter(pieces).then(|piece| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok::<_, std::io::Error>(piece)
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn serve() -> Client {
    let app = Router::new()
        .route("/", get(|| async { "whaled is running" }))
        .route("/api/version", get(|| async { r#"{"version":"0.1.0"}"# }))
        .route("/api/generate", post(|| async { odd_chunks() }))
        .route(
            "/api/chat",
            post(|| async {
                concat!(
                    r#"{"model":"m","created_at":"t","message":{"role":"assistant","content":"hi"},"done":false}"#,
                    "\n",
                    r#"{"error":"llama runner process has terminated"}"#,
                    "\n"
                )
            }),
        )
        .route(
            "/api/show",
            post(|| async {
                (StatusCode::NOT_FOUND, r#"{"error":"model 'x' not found"}"#).into_response()
            }),
        )
        .route(
            "/api/pull",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response() }),
        )
        .route(
            "/api/blobs/{digest}",
            axum::routing::head(|axum::extract::Path(d): axum::extract::Path<String>| async move {
                if d == "sha256:aa" { StatusCode::OK } else { StatusCode::NOT_FOUND }
            })
            .post(|body: axum::body::Bytes| async move {
                if body.as_ref() == b"blob" { StatusCode::CREATED } else { StatusCode::BAD_REQUEST }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Client::new(&address.to_string()).unwrap()
}

#[tokio::test]
async fn ndjson_lines_spanning_chunks() {
    let client = serve().await;
    let request = GenerateRequest {
        model: "m".into(),
        prompt: "p".into(),
        ..GenerateRequest::default()
    };
    let lines: Vec<_> = client
        .generate_stream(&request)
        .await
        .unwrap()
        .collect()
        .await;
    let lines: Vec<_> = lines.into_iter().map(Result::unwrap).collect();
    assert_eq!(lines.len(), 3);
    let text: String = lines.iter().map(|l| l.response.as_str()).collect();
    assert_eq!(text, "Whalé ｜");
    assert_eq!(lines[2].done_reason.as_deref(), Some("stop"));
    assert_eq!(lines[2].metrics.eval_count, Some(2));
}

#[tokio::test]
async fn error_line_mid_stream() {
    let client = serve().await;
    let request = ChatRequest {
        model: "m".into(),
        messages: vec![Message::new("user", "hi")],
        ..ChatRequest::default()
    };
    let mut stream = client.chat_stream(&request).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().message.content, "hi");
    match stream.next().await.unwrap() {
        Err(Error::Api { message, .. }) => assert!(message.contains("terminated"), "{message}"),
        other => panic!("expected an Api error, got {other:?}"),
    }
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn status_errors_and_plain_calls() {
    let client = serve().await;
    assert_eq!(client.version().await.unwrap().version, "0.1.0");
    client.heartbeat().await.unwrap();
    match client
        .show(&ShowRequest {
            model: "x".into(),
            verbose: None,
        })
        .await
    {
        Err(Error::Api {
            status: 404,
            message,
        }) => assert_eq!(message, "model 'x' not found"),
        other => panic!("expected 404, got {other:?}"),
    }
    match client
        .pull_stream(&PullRequest {
            model: "x".into(),
            ..PullRequest::default()
        })
        .await
    {
        Err(Error::Api {
            status: 500,
            message,
        }) => assert_eq!(message, "boom"),
        Err(other) => panic!("expected 500, got {other:?}"),
        Ok(_) => panic!("expected 500, got a stream"),
    }
    assert!(client.blob_exists("sha256:aa").await.unwrap());
    assert!(!client.blob_exists("sha256:bb").await.unwrap());
    client.upload_blob("sha256:aa", &b"blob"[..]).await.unwrap();
    let path = std::env::temp_dir().join(format!("whale-api-blob-{}", std::process::id()));
    std::fs::write(&path, b"blob").unwrap();
    client.upload_blob_file("sha256:aa", &path).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        client.upload_blob("sha256:aa", &b"nope"[..]).await,
        Err(Error::Api { status: 400, .. })
    ));
}

#[tokio::test]
async fn connection_refused_is_distinct() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::new(&address.to_string()).unwrap();
    assert!(matches!(client.version().await, Err(Error::Connect { .. })));
}
