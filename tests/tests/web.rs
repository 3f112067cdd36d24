//! End-to-end: what a web page, a stranger on the network and a slow client can do to whaled.
//! Pages of other sites cannot act (Host, Origin and content-type checks), pages of allowed
//! origins get CORS, keys guard whaled beyond loopback, and connections are bounded.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::RequestBuilder;
use serde_json::{Value, json};
use whale_tests::fixtures;
use whale_tests::whaled::{Whaled, binary};

/// A daemon holding model `tiny`.
fn daemon_with_model() -> Whaled {
    let daemon = Whaled::start();
    daemon.create_from_gguf("tiny", &fixtures::qwen2());
    daemon
}

/// The names `/api/tags` lists.
fn names(daemon: &Whaled) -> Vec<String> {
    let (status, tags) = daemon.get("/api/tags");
    assert_eq!(status, 200, "{tags}");
    let mut names: Vec<String> = tags["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|model| model["name"].as_str().expect("name").to_owned())
        .collect();
    names.sort();
    names
}

fn send(request: RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = request.send().expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// The requests that change the store, each as a page would send it: `text/plain`, which a
/// browser sends cross-site without asking first.
fn store_changing_requests(daemon: &Whaled) -> Vec<(&'static str, RequestBuilder)> {
    let client = Whaled::http();
    let url = |path: &str| format!("{}{path}", daemon.url());
    let text = |builder: RequestBuilder, body: Value| {
        builder
            .header("content-type", "text/plain")
            .body(body.to_string())
    };
    vec![
        (
            "copy",
            text(
                client.post(url("/api/copy")),
                json!({"source": "tiny", "destination": "stolen"}),
            ),
        ),
        (
            "pull",
            text(
                client.post(url("/api/pull")),
                json!({"model": "127.0.0.1:9/x/y:z", "insecure": true}),
            ),
        ),
        (
            "push",
            text(
                client.post(url("/api/push")),
                json!({"model": "tiny", "insecure": true}),
            ),
        ),
        (
            "create",
            text(
                client.post(url("/api/create")),
                json!({"model": "made", "from": "tiny"}),
            ),
        ),
        (
            "delete",
            text(client.delete(url("/api/delete")), json!({"model": "tiny"})),
        ),
    ]
}

#[test]
fn a_foreign_host_is_refused_and_loopback_names_are_served() {
    let daemon = Whaled::start();
    let client = Whaled::http();
    let (status, _, body) = send(
        client
            .get(format!("{}/api/tags", daemon.url()))
            .header("host", "evil.example.com"),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.contains("WHALE_ALLOWED_HOSTS")),
        "{body}"
    );
    let port = daemon.url().rsplit(':').next().unwrap().to_owned();
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let (status, _, body) = send(
            client
                .get(format!("{}/api/tags", daemon.url()))
                .header("host", host.as_str()),
        );
        assert_eq!(status, 200, "{host}: {body}");
    }

    // A configured host is served.
    let daemon = Whaled::builder()
        .env("WHALE_ALLOWED_HOSTS", "models.example.com,*.corp.example")
        .start();
    for host in ["models.example.com", "gpu.corp.example:11434"] {
        let (status, _, body) = send(
            client
                .get(format!("{}/api/tags", daemon.url()))
                .header("host", host),
        );
        assert_eq!(status, 200, "{host}: {body}");
    }
}

#[test]
fn pages_of_other_sites_change_nothing() {
    let daemon = daemon_with_model();
    let before = names(&daemon);
    for (what, request) in store_changing_requests(&daemon) {
        let (status, _, body) = send(request.header("origin", "https://evil.example.com"));
        assert_eq!(status, 403, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("origin")),
            "{body}"
        );
    }
    // Without an Origin (an old browser, a stripped header) text/plain is refused all the same.
    for (what, request) in store_changing_requests(&daemon) {
        let (status, _, body) = send(request);
        assert_eq!(status, 415, "{what}: {body}");
    }
    assert_eq!(names(&daemon), before);
    assert!(
        !daemon.log().contains("pulling"),
        "nothing was pulled:\n{}",
        daemon.log()
    );

    // A preflight from another site is not approved.
    let (_, headers, _) = send(
        Whaled::http()
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/copy", daemon.url()),
            )
            .header("origin", "https://evil.example.com")
            .header("access-control-request-method", "POST"),
    );
    assert!(headers.get("access-control-allow-origin").is_none());

    // `curl -d` (a form type, from no browser) still works.
    let (status, _, body) = send(
        Whaled::http()
            .post(format!("{}/api/copy", daemon.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(json!({"source": "tiny", "destination": "copied"}).to_string()),
    );
    assert_eq!(status, 200, "{body}");
    assert!(names(&daemon).iter().any(|name| name == "copied:latest"));
}

#[test]
fn allowed_origins_work_and_get_cors_headers() {
    let daemon = Whaled::builder()
        .env("WHALE_ORIGINS", "https://ui.example.com")
        .start();
    daemon.create_from_gguf("tiny", &fixtures::qwen2());
    let client = Whaled::http();
    for origin in [
        "http://localhost:3000",
        "http://127.0.0.1:5173",
        "app://obsidian.md",
        "https://ui.example.com",
    ] {
        // The preflight a page's fetch with JSON sends first.
        let (status, headers, _) = send(
            client
                .request(
                    reqwest::Method::OPTIONS,
                    format!("{}/api/copy", daemon.url()),
                )
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "content-type,x-stainless-os",
                ),
        );
        assert!(status < 300, "{origin}: preflight answered {status}");
        assert_eq!(headers["access-control-allow-origin"], origin);
        let allowed = headers["access-control-allow-headers"].to_str().unwrap();
        assert!(allowed.contains("x-stainless-os"), "{allowed}");
        let methods = headers["access-control-allow-methods"].to_str().unwrap();
        assert!(methods.contains("POST"), "{methods}");

        let destination = format!("copy-{}", origin.len());
        let (status, headers, body) = send(
            client
                .post(format!("{}/api/copy", daemon.url()))
                .header("origin", origin)
                .json(&json!({"source": "tiny", "destination": destination})),
        );
        assert_eq!(status, 200, "{origin}: {body}");
        assert_eq!(headers["access-control-allow-origin"], origin);
        assert!(names(&daemon).contains(&format!("{destination}:latest")));
    }
}

#[test]
fn keys_guard_every_route_but_the_probes() {
    let daemon = Whaled::builder()
        .env("WHALE_HOST", "0.0.0.0:0")
        .env("WHALE_API_KEY", "first-key,second-key")
        .start();
    let client = Whaled::http();
    let url = |path: &str| format!("{}{path}", daemon.url());
    let (status, headers, body) = send(client.get(url("/api/tags")));
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert!(
        body["error"].as_str().unwrap().contains("API key"),
        "{body}"
    );
    let (status, _, body) = send(client.get(url("/api/tags")).bearer_auth("wrong"));
    assert_eq!(status, 401, "{body}");
    // OpenAI's clients read OpenAI's error object.
    let (status, _, body) = send(client.get(url("/v1/models")).bearer_auth("wrong"));
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    for key in ["first-key", "second-key"] {
        let (status, _, body) = send(client.get(url("/api/tags")).bearer_auth(key));
        assert_eq!(status, 200, "{body}");
        let (status, _, body) = send(client.get(url("/v1/models")).bearer_auth(key));
        assert_eq!(status, 200, "{body}");
    }
    // With a key, the name a client uses for the host is its own business.
    let (status, _, body) = send(
        client
            .get(url("/api/tags"))
            .header("host", "whale.example.com")
            .bearer_auth("first-key"),
    );
    assert_eq!(status, 200, "{body}");
    for path in ["/", "/api/version"] {
        let (status, _, body) = send(client.get(url(path)));
        assert_eq!(status, 200, "{path}: {body}");
    }

    // whale sends WHALE_API_KEY, and says what to do without it.
    let listed = daemon
        .whale(["list"])
        .env("WHALE_API_KEY", "second-key")
        .output()
        .expect("whale list");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let refused = daemon.whale(["list"]).output().expect("whale list");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(
        stderr.contains("hint:") && stderr.contains("WHALE_API_KEY"),
        "{stderr}"
    );
}

#[test]
fn listening_beyond_loopback_without_a_key_is_refused_at_start() {
    let store = tempfile::tempdir().unwrap();
    let output = Command::new(binary("whaled"))
        .env("WHALE_HOST", "0.0.0.0:0")
        .env("WHALE_MODELS", store.path())
        .env_remove("WHALE_API_KEY")
        .env_remove("WHALE_NO_API_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("run whaled");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: whaled would listen on 0.0.0.0"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint:") && stderr.contains("WHALE_API_KEY"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).is_empty());

    // Waived knowingly, it serves.
    let daemon = Whaled::builder()
        .env("WHALE_HOST", "0.0.0.0:0")
        .env("WHALE_NO_API_KEY", "1")
        .start();
    assert_eq!(daemon.get("/api/tags").0, 200);
}

/// Reads from `stream` until the peer closes it; how long that took.
fn until_closed(stream: &mut TcpStream, limit: Duration) -> Duration {
    stream.set_read_timeout(Some(limit)).unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(error) => panic!("the connection stayed open: {error}"),
        }
    }
}

#[test]
fn slow_and_idle_connections_are_closed_and_connections_are_capped() {
    let daemon = Whaled::builder()
        .env("WHALE_HEADER_TIMEOUT", "1s")
        .env("WHALE_MAX_CONNECTIONS", "2")
        .start();
    let address = daemon.url().trim_start_matches("http://").to_owned();

    // Headers that never end.
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let waited = until_closed(&mut slow, Duration::from_secs(20));
    assert!(waited < Duration::from_secs(10), "closed after {waited:?}");

    // A keep-alive connection left idle after its request.
    let mut idle = TcpStream::connect(&address).unwrap();
    idle.write_all(b"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let waited = until_closed(&mut idle, Duration::from_secs(20));
    assert!(waited < Duration::from_secs(10), "closed after {waited:?}");

    // Two connections held open: a third waits until one of them goes. (A daemon whose
    // header deadline is far off, so that only the test closes them.)
    let daemon = Whaled::builder().env("WHALE_MAX_CONNECTIONS", "2").start();
    let address = daemon.url().trim_start_matches("http://").to_owned();
    let first = TcpStream::connect(&address).unwrap();
    let second = TcpStream::connect(&address).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (sender, receiver) = std::sync::mpsc::channel();
    let url = daemon.url();
    std::thread::spawn(move || {
        let started = Instant::now();
        let status = Whaled::http()
            .get(format!("{url}/api/version"))
            .send()
            .map(|response| response.status().as_u16());
        let _ = sender.send((status.ok(), started.elapsed()));
    });
    assert!(
        receiver.recv_timeout(Duration::from_secs(1)).is_err(),
        "a third connection was served while two were held"
    );
    drop(first);
    drop(second);
    let (status, _) = receiver
        .recv_timeout(Duration::from_secs(20))
        .expect("served once a connection closed");
    assert_eq!(status, Some(200));
}
