//! Who may talk to whaled. whaled listens on a port of someone's laptop, and any web page that
//! person opens can send it requests, so three checks run before any handler:
//!
//! - **Host**: a page on `evil.example.com` that re-resolves its own name to 127.0.0.1 (DNS
//!   rebinding) sends `Host: evil.example.com`. Without an API key, only hosts that cannot be
//!   rebound this way are served: IP literals, `localhost` and `*.localhost`, this machine's
//!   name, `*.local` and `*.internal` (as Ollama allows), and `WHALE_ALLOWED_HOSTS`.
//! - **Origin**: a browser names the page that sent a request. Only loopback pages, the app
//!   schemes Ollama allows (`app:`, `file:`, `tauri:`, `vscode-webview:`, `vscode-file:`) and
//!   `WHALE_ORIGINS` are served, and only they get CORS headers.
//! - **Content type**: a page may POST `text/plain`, a form or `multipart/form-data` anywhere
//!   without asking first. JSON routes take `application/json`, `*+json` or no type;
//!   `application/x-www-form-urlencoded` (what `curl -d` sends) only from clients that are not
//!   browsers (no `Origin`, no `Sec-Fetch-Site`).
//!
//! With `WHALE_API_KEY` set, every request but `GET /` and `GET /api/version` (liveness and
//! version probes) and CORS preflights needs `Authorization: Bearer <key>`. whaled refuses to listen beyond loopback without a key
//! unless told that is meant (`WHALE_NO_API_KEY`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

/// App schemes whose pages may call whaled, as Ollama allows them.
const APP_SCHEMES: [&str; 5] = ["app", "file", "tauri", "vscode-webview", "vscode-file"];

/// Host suffixes that public DNS cannot hand to an attacker's page.
const LOCAL_SUFFIXES: [&str; 3] = [".localhost", ".local", ".internal"];

/// What the checks allow, from whaled's configuration.
#[derive(Clone)]
pub struct Policy {
    allowed_hosts: Vec<Pattern>,
    origins: Vec<Pattern>,
    /// SHA-256 of each accepted key: compared digest to digest, so the time a comparison
    /// takes says nothing about the key.
    keys: Vec<[u8; 32]>,
    /// This machine's name, lowercase.
    hostname: Option<String>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("allowed_hosts", &self.allowed_hosts)
            .field("origins", &self.origins)
            .field("keys", &self.keys.len())
            .field("hostname", &self.hostname)
            .finish()
    }
}

/// Why a request was turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Host(String),
    Origin(String),
    ContentType(String),
    NoKey,
    WrongKey,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Host(host) => write!(
                f,
                "host {host:?} is not allowed: add it to WHALE_ALLOWED_HOSTS to serve requests \
                 addressed to it"
            ),
            Refusal::Origin(origin) => write!(
                f,
                "origin {origin:?} is not allowed: add it to WHALE_ORIGINS to let its pages call \
                 whaled"
            ),
            Refusal::ContentType(kind) => write!(
                f,
                "content type {kind:?} is not accepted here: send JSON with \
                 Content-Type: application/json"
            ),
            Refusal::NoKey => write!(
                f,
                "an API key is required: send Authorization: Bearer <key> (whale reads it from \
                 WHALE_API_KEY)"
            ),
            Refusal::WrongKey => write!(f, "invalid API key"),
        }
    }
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Host(_) | Refusal::Origin(_) => StatusCode::FORBIDDEN,
            Refusal::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::NoKey | Refusal::WrongKey => StatusCode::UNAUTHORIZED,
        }
    }

    /// `{"error": "..."}`, or OpenAI's error object on `/v1/*`.
    fn into_response(self, openai: bool) -> Response {
        let status = self.status();
        let message = self.to_string();
        let mut response = if openai {
            let mut body = whale_api::openai::ErrorResponse::new(status.as_u16(), message);
            "invalid_request_error".clone_into(&mut body.error.kind);
            if status == StatusCode::UNAUTHORIZED {
                body.error.code = Some("invalid_api_key".to_owned());
            }
            (status, axum::Json(body)).into_response()
        } else {
            (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
        };
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl Policy {
    /// A policy from configured hosts, origins and keys (each list as the variables hold it).
    pub fn new(allowed_hosts: &[String], origins: &[String], keys: &[String]) -> Self {
        let patterns = |items: &[String]| -> Vec<Pattern> {
            items
                .iter()
                .map(|item| item.trim())
                .filter(|item| !item.is_empty())
                .map(Pattern::new)
                .collect()
        };
        Self {
            allowed_hosts: patterns(allowed_hosts),
            origins: patterns(origins),
            keys: keys
                .iter()
                .map(|key| key.trim())
                .filter(|key| !key.is_empty())
                .map(|key| Sha256::digest(key.as_bytes()).into())
                .collect(),
            hostname: hostname(),
        }
    }

    /// Whether requests need a key.
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Whether a `Host` header (with or without a port) names whaled in a way no other site
    /// can borrow.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        if name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || LOCAL_SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
            || self.hostname.as_deref() == Some(name.as_str())
        {
            return true;
        }
        self.allowed_hosts
            .iter()
            .any(|pattern| pattern.matches(&name) || pattern.matches(&host.to_ascii_lowercase()))
    }

    /// Whether pages of `origin` may call whaled.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        let bare = origin.trim_end_matches('/');
        if self.origins.iter().any(|pattern| pattern.matches(bare)) {
            return true;
        }
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        if APP_SCHEMES.contains(&scheme) {
            return true;
        }
        if scheme != "http" && scheme != "https" {
            return false;
        }
        let name = host_name(rest);
        name == "localhost"
            || name.ends_with(".localhost")
            || name
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
    }

    /// Whether `presented` (the bearer token) is one of the keys.
    fn key_matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.keys.contains(&digest)
    }

    /// The checks, in order; `None` lets the request through.
    pub fn check(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Refusal> {
        // HTTP/2 names the host in the URI's authority instead.
        let host = headers
            .get(HOST)
            .map(|host| String::from_utf8_lossy(host.as_bytes()).into_owned())
            .or_else(|| uri.authority().map(ToString::to_string));
        if !self.has_keys()
            && let Some(host) = host
            && !self.host_allowed(&host)
        {
            return Some(Refusal::Host(host));
        }
        let origin = headers
            .get(ORIGIN)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        if let Some(origin) = &origin
            && !self.origin_allowed(origin)
        {
            return Some(Refusal::Origin(origin.clone()));
        }
        if *method == Method::OPTIONS {
            return None;
        }
        if self.has_keys() && !is_public(method, uri) {
            match bearer(headers) {
                None => return Some(Refusal::NoKey),
                Some(key) if !self.key_matches(key) => return Some(Refusal::WrongKey),
                Some(_) => {}
            }
        }
        let from_browser = origin.is_some() || headers.contains_key("sec-fetch-site");
        content_type_refusal(method, uri, headers, from_browser)
    }

    /// CORS for allowed origins: preflights answered, responses marked readable by them.
    pub fn cors(self: &Arc<Self>) -> CorsLayer {
        let policy = Arc::clone(self);
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin, _| {
                origin
                    .to_str()
                    .is_ok_and(|origin| policy.origin_allowed(origin))
            }))
            .allow_methods(AllowMethods::list([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::OPTIONS,
            ]))
            // The origin is vetted; OpenAI's SDKs send a changing family of `x-stainless-*`.
            .allow_headers(AllowHeaders::mirror_request())
            .max_age(Duration::from_hours(24))
    }
}

/// What anyone may ask without a key: whether whaled is up, and its version (which clients
/// ask first to find out what they talk to).
fn is_public(method: &Method, uri: &Uri) -> bool {
    matches!(*method, Method::GET | Method::HEAD) && matches!(uri.path(), "/" | "/api/version")
}

/// Refuses bodies a page could send cross-site without a preflight, on the JSON routes.
fn content_type_refusal(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    from_browser: bool,
) -> Option<Refusal> {
    let has_body = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    // Blob uploads are raw bytes; the registry routes only read.
    if !has_body || uri.path().starts_with("/api/blobs/") {
        return None;
    }
    let kind = headers.get(CONTENT_TYPE)?;
    let kind = String::from_utf8_lossy(kind.as_bytes()).to_ascii_lowercase();
    let essence = kind.split(';').next().unwrap_or("").trim();
    let json = essence == "application/json" || essence.ends_with("+json");
    let curl = essence == "application/x-www-form-urlencoded" && !from_browser;
    (!json && !curl).then(|| Refusal::ContentType(essence.to_owned()))
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// The name part of `host[:port]` or `[v6]:port`, lowercase, without a trailing dot.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// This machine's name, as the kernel has it.
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

/// A configured host or origin: exact, or with `*` standing for any run of characters
/// (`*.example.com`, `https://*.example.com`, `*` for all).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern(String);

impl Pattern {
    fn new(text: &str) -> Self {
        Self(text.trim_end_matches('/').to_ascii_lowercase())
    }

    fn matches(&self, text: &str) -> bool {
        glob(self.0.as_bytes(), text.as_bytes())
    }
}

/// `*`-only glob matching, iterative (no recursion on hostile input).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The middleware: refusals answer at once, in the route family's error shape.
pub async fn check(State(policy): State<Arc<Policy>>, request: Request, next: Next) -> Response {
    match policy.check(request.method(), request.uri(), request.headers()) {
        None => next.run(request).await,
        Some(refusal) => {
            tracing::warn!(method = %request.method(), path = request.uri().path(), %refusal, "request refused");
            refusal.into_response(request.uri().path().starts_with("/v1/"))
        }
    }
}

/// Refuses to serve beyond loopback without a key, unless `waived`.
pub fn check_exposure(address: SocketAddr, policy: &Policy, waived: bool) -> Result<(), String> {
    if address.ip().is_loopback() || policy.has_keys() || waived {
        return Ok(());
    }
    Err(format!(
        "whaled would listen on {address} with no API key, so anyone who can reach that port \
         could run, pull, push and delete models\n\
         hint: set WHALE_API_KEY (and the same in whale's environment), listen on 127.0.0.1, \
         or set WHALE_NO_API_KEY=1 if the network is yours alone"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new(
            &["models.example.com".into(), "*.corp.example".into()],
            &[
                "https://ui.example.com".into(),
                "chrome-extension://*".into(),
            ],
            &[],
        )
    }

    #[test]
    fn hosts_that_cannot_be_rebound_are_served() {
        let policy = policy();
        for host in [
            "127.0.0.1:11434",
            "localhost:11434",
            "LOCALHOST",
            "[::1]:11434",
            "10.1.2.3",
            "0.0.0.0:11434",
            "box.local",
            "app.localhost:8080",
            "gpu.internal",
            "models.example.com:11434",
            "a.corp.example",
            "localhost.",
        ] {
            assert!(policy.host_allowed(host), "{host}");
        }
        for host in [
            "evil.example.com",
            "evil.example.com:11434",
            "localhost.evil.com",
            "127.0.0.1.nip.io",
            "corp.example",
            "",
        ] {
            assert!(!policy.host_allowed(host), "{host}");
        }
    }

    #[test]
    fn origins_of_loopback_pages_apps_and_configured_sites_are_allowed() {
        let policy = policy();
        for origin in [
            "http://localhost",
            "http://localhost:3000",
            "https://127.0.0.1:8443",
            "http://[::1]:5173",
            "http://0.0.0.0:8080",
            "http://ui.localhost:3000",
            "app://obsidian.md",
            "file://",
            "tauri://localhost",
            "vscode-webview://abc",
            "https://ui.example.com",
            "https://UI.example.com/",
            "chrome-extension://abcdef",
        ] {
            assert!(policy.origin_allowed(origin), "{origin}");
        }
        for origin in [
            "https://evil.example.com",
            "http://localhost.evil.com",
            "http://10.0.0.5:3000",
            "null",
            "https://ui.example.com.evil.com",
            "moz-extension://abc",
        ] {
            assert!(!policy.origin_allowed(origin), "{origin}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn simple_cross_site_bodies_are_refused_on_json_routes() {
        let policy = Policy::new(&[], &[], &[]);
        let post = |path: &str, pairs: &[(&'static str, &str)]| {
            policy.check(&Method::POST, &path.parse().unwrap(), &headers(pairs))
        };
        let local = ("host", "127.0.0.1:11434");
        assert_eq!(post("/api/copy", &[local]), None);
        assert_eq!(
            post(
                "/api/copy",
                &[local, ("content-type", "application/json; charset=utf-8")]
            ),
            None
        );
        assert_eq!(
            post(
                "/api/copy",
                &[local, ("content-type", "application/vnd.api+json")]
            ),
            None
        );
        // curl -d
        assert_eq!(
            post(
                "/api/copy",
                &[local, ("content-type", "application/x-www-form-urlencoded")]
            ),
            None
        );
        for kind in ["text/plain", "multipart/form-data; boundary=x"] {
            assert!(matches!(
                post("/api/copy", &[local, ("content-type", kind)]),
                Some(Refusal::ContentType(_))
            ));
        }
        assert!(matches!(
            post(
                "/api/copy",
                &[
                    local,
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("sec-fetch-site", "same-origin")
                ]
            ),
            Some(Refusal::ContentType(_))
        ));
        assert_eq!(
            post(
                "/api/blobs/sha256:00",
                &[local, ("content-type", "application/octet-stream")]
            ),
            None
        );
    }

    #[test]
    fn keys_are_checked_and_replace_the_host_check() {
        let policy = Policy::new(&[], &[], &["s3cret".into(), "other".into()]);
        let get = |path: &str, pairs: &[(&'static str, &str)]| {
            policy.check(&Method::GET, &path.parse().unwrap(), &headers(pairs))
        };
        let host = ("host", "models.example.com");
        assert_eq!(get("/api/tags", &[host]), Some(Refusal::NoKey));
        assert_eq!(
            get("/api/tags", &[host, ("authorization", "Bearer nope")]),
            Some(Refusal::WrongKey)
        );
        assert_eq!(
            get("/api/tags", &[host, ("authorization", "Basic s3cret")]),
            Some(Refusal::NoKey)
        );
        assert_eq!(
            get("/api/tags", &[host, ("authorization", "Bearer s3cret")]),
            None
        );
        assert_eq!(
            get("/api/tags", &[host, ("authorization", "bearer other")]),
            None
        );
        assert_eq!(get("/", &[host]), None);
        assert_eq!(get("/api/version", &[host]), None);
        assert_eq!(
            policy.check(
                &Method::OPTIONS,
                &"/api/chat".parse().unwrap(),
                &headers(&[host])
            ),
            None
        );
    }

    #[test]
    fn listening_beyond_loopback_needs_a_key_or_a_waiver() {
        let open = Policy::new(&[], &[], &[]);
        let keyed = Policy::new(&[], &[], &["k".into()]);
        let any: SocketAddr = "0.0.0.0:11434".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:11434".parse().unwrap();
        assert!(check_exposure(loopback, &open, false).is_ok());
        assert!(check_exposure(any, &keyed, false).is_ok());
        assert!(check_exposure(any, &open, true).is_ok());
        let error = check_exposure(any, &open, false).unwrap_err();
        assert!(error.contains("WHALE_API_KEY"), "{error}");
    }

    #[test]
    fn globs_match_whole_strings() {
        assert!(glob(b"*", b"anything"));
        assert!(glob(b"*.example.com", b"a.b.example.com"));
        assert!(!glob(b"*.example.com", b"example.com"));
        assert!(glob(b"a*b*c", b"aXXbYYc"));
        assert!(!glob(b"a*b*c", b"aXXbYY"));
        assert!(glob(b"exact", b"exact"));
        assert!(!glob(b"exact", b"exactly"));
    }
}
