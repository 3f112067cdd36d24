//! The HTTP side shared by pull and push: URL schemes (`insecure`), redirects (http/https
//! only), and the bearer-token challenge (`401` + `WWW-Authenticate: Bearer realm=…`).

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use url::Url;

use crate::error::{Error, Result};
use crate::reference::ModelRef;

/// Sent as `User-Agent`, so registry logs can tell whale from Ollama.
const USER_AGENT: &str = concat!("whale/", env!("CARGO_PKG_VERSION"));

/// Why a redirect was not followed; found again in reqwest's error chain.
#[derive(Debug)]
struct RedirectRefused {
    url: String,
    reason: &'static str,
}

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redirect to {}: {}", self.url, self.reason)
    }
}

impl std::error::Error for RedirectRefused {}

/// A client for one pull or push: it remembers the token a challenge gave it.
pub(crate) struct Session {
    client: Client,
    insecure: bool,
    /// The bearer token from the last challenge, sent with every later request.
    token: Mutex<Option<String>>,
}

/// Whether `url` may be fetched: https always, http only with `insecure`.
pub(crate) fn check_scheme(url: &Url, insecure: bool) -> Result<()> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if insecure => Ok(()),
        "http" => Err(Error::InsecureOrUnsupportedUrl {
            url: url.to_string(),
            reason: "insecure protocol http (set insecure to allow plain http)".into(),
        }),
        other => Err(Error::InsecureOrUnsupportedUrl {
            url: url.to_string(),
            reason: format!("unsupported scheme {other:?} (only http and https)"),
        }),
    }
}

/// `<scheme>://<host>/v2/<ns>/<model>/`: the repository's base URL on its own registry.
pub(crate) fn repository_url(reference: &ModelRef, insecure: bool) -> Result<Url> {
    let scheme = if insecure { "http" } else { "https" };
    let url = format!(
        "{scheme}://{}/v2/{}/",
        reference.host(),
        reference.repository()
    );
    Url::parse(&url).map_err(|e| Error::InvalidName {
        name: reference.to_string(),
        reason: format!("not a valid registry URL: {e}"),
    })
}

/// The repository's base URL on a mirror (`http://host:port` → `…/v2/<ns>/<model>/`).
pub(crate) fn mirror_url(mirror: &Url, reference: &ModelRef) -> Result<Url> {
    let mut base = mirror.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    base.join(&format!("v2/{}/", reference.repository()))
        .map_err(|e| Error::InsecureOrUnsupportedUrl {
            url: mirror.to_string(),
            reason: e.to_string(),
        })
}

/// Resolves `path` against a repository base URL.
pub(crate) fn join(base: &Url, path: &str) -> Result<Url> {
    base.join(path)
        .map_err(|e| Error::InsecureOrUnsupportedUrl {
            url: format!("{base}{path}"),
            reason: e.to_string(),
        })
}

impl Session {
    /// A session; `insecure` allows plain http for the registry, its redirects and its realm.
    pub(crate) fn new(insecure: bool) -> Self {
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            let url = attempt.url().to_string();
            if attempt.previous().len() >= 10 {
                return attempt.error(RedirectRefused {
                    url,
                    reason: "more than 10 redirects",
                });
            }
            match attempt.url().scheme() {
                "https" => attempt.follow(),
                "http" if insecure => attempt.follow(),
                "http" => attempt.error(RedirectRefused {
                    url,
                    reason: "insecure protocol http (set insecure to allow plain http)",
                }),
                _ => attempt.error(RedirectRefused {
                    url,
                    reason: "only http and https redirects are followed",
                }),
            }
        });
        let client = Client::builder()
            .user_agent(USER_AGENT)
            .redirect(policy)
            .connect_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .expect("the TLS backend initialises");
        Session {
            client,
            insecure,
            token: Mutex::new(None),
        }
    }

    /// Sends a request, answering one bearer challenge if the registry asks for it. `build`
    /// is called again for the retry (bodies are not replayable).
    pub(crate) async fn send(&self, build: impl Fn(&Client) -> RequestBuilder) -> Result<Response> {
        let response = self.send_once(&build).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let url = response.url().to_string();
        let challenge =
            Challenge::parse(response.headers()).ok_or_else(|| Error::Unauthorized {
                url: url.clone(),
                reason: "401 without a usable WWW-Authenticate Bearer challenge".into(),
            })?;
        let token = self.fetch_token(&challenge).await?;
        *self.token.lock().expect("token lock") = Some(token);
        let retried = self.send_once(&build).await?;
        if retried.status() == StatusCode::UNAUTHORIZED {
            return Err(Error::Unauthorized {
                url,
                reason: "access denied with the token from the challenge".into(),
            });
        }
        Ok(retried)
    }

    async fn send_once(&self, build: &impl Fn(&Client) -> RequestBuilder) -> Result<Response> {
        let mut builder = build(&self.client);
        if let Some(token) = self.token.lock().expect("token lock").as_deref() {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = builder.build().map_err(|e| http_error("(request)", e))?;
        check_scheme(request.url(), self.insecure)?;
        let url = request.url().to_string();
        self.client
            .execute(request)
            .await
            .map_err(|e| http_error(&url, e))
    }

    async fn fetch_token(&self, challenge: &Challenge) -> Result<String> {
        let mut realm = Url::parse(&challenge.realm).map_err(|e| Error::Unauthorized {
            url: challenge.realm.clone(),
            reason: format!("challenge realm is not a URL: {e}"),
        })?;
        check_scheme(&realm, self.insecure)?;
        {
            let mut query = realm.query_pairs_mut();
            if let Some(service) = &challenge.service {
                query.append_pair("service", service);
            }
            for scope in challenge.scope.iter().flat_map(|s| s.split(' ')) {
                query.append_pair("scope", scope);
            }
        }
        let url = realm.to_string();
        let response = self
            .client
            .get(realm)
            .send()
            .await
            .map_err(|e| http_error(&url, e))?;
        if !response.status().is_success() {
            return Err(Error::Unauthorized {
                url,
                reason: format!("token endpoint answered {}", response.status()),
            });
        }
        let body: TokenResponse = response.json().await.map_err(|e| Error::Unauthorized {
            url: url.clone(),
            reason: format!("token response is not JSON with a token: {e}"),
        })?;
        body.token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Unauthorized {
                url,
                reason: "token response has no token".into(),
            })
    }
}

/// Turns a response with an error status into [`Error::Status`] (with the start of the body).
pub(crate) async fn error_status(response: Response) -> Error {
    let url = response.url().to_string();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Error::Status {
        url,
        status,
        body: body.chars().take(1000).collect(),
    }
}

/// Maps a reqwest error, recognising a refused redirect and a failed TLS handshake in its
/// source chain.
pub(crate) fn http_error(url: &str, error: reqwest::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<RedirectRefused>() {
            return Error::InsecureOrUnsupportedUrl {
                url: refused.url.clone(),
                reason: format!("redirect refused: {}", refused.reason),
            };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // rustls reports a failed handshake (a plain-http server, a bad certificate) as an
            // io::Error of kind InvalidData, possibly wrapped in another io::Error; asking
            // again will not change the answer.
            if error.is_connect() && io.kind() == std::io::ErrorKind::InvalidData {
                return Error::Tls {
                    url: url.to_owned(),
                    reason: io.to_string(),
                };
            }
            // An io::Error's `source()` skips the error it wraps; descend into it instead.
            if let Some(inner) = io.get_ref() {
                source = Some(inner);
                continue;
            }
        }
        source = e.source();
    }
    Error::Http {
        url: url.to_owned(),
        source: error,
    }
}

/// The token endpoint's answer (Docker uses `token`, OAuth-style servers `access_token`).
#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

/// A parsed `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

impl Challenge {
    fn parse(headers: &HeaderMap) -> Option<Challenge> {
        headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(Challenge::parse_value)
    }

    fn parse_value(value: &str) -> Option<Challenge> {
        let (scheme, params) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let (mut realm, mut service, mut scope) = (None, None, None);
        let mut rest = params.trim();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=')?;
            let key = key.trim().to_ascii_lowercase();
            let after = after.trim_start();
            let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
                // A quoted value ends at a quote followed by a comma or the end.
                let end = quoted.match_indices('"').map(|(i, _)| i).find(|&i| {
                    quoted[i + 1..].trim_start().starts_with(',')
                        || quoted[i + 1..].trim().is_empty()
                })?;
                (quoted[..end].to_owned(), &quoted[end + 1..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_owned(), &after[end..])
            };
            match key.as_str() {
                "realm" => realm = Some(value),
                "service" => service = Some(value),
                "scope" => scope = Some(value),
                _ => {}
            }
            rest = remaining.trim_start().trim_start_matches(',').trim_start();
        }
        Some(Challenge {
            realm: realm.filter(|r| !r.is_empty())?,
            service,
            scope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let c = Challenge::parse_value(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.example/token");
        assert_eq!(c.service.as_deref(), Some("registry.example"));
        assert_eq!(c.scope.as_deref(), Some("repository:a/b:pull,push"));
        let bare = Challenge::parse_value("bearer realm=http://x/t").unwrap();
        assert_eq!(bare.realm, "http://x/t");
        assert!(Challenge::parse_value(r#"Basic realm="x""#).is_none());
        assert!(Challenge::parse_value("Bearer service=\"x\"").is_none());
        assert!(Challenge::parse_value("Bearer").is_none());
    }

    #[test]
    fn schemes() {
        let name = ModelRef::parse("127.0.0.1:5000/ns/m:t").unwrap();
        assert_eq!(
            repository_url(&name, true).unwrap().as_str(),
            "http://127.0.0.1:5000/v2/ns/m/"
        );
        assert_eq!(repository_url(&name, false).unwrap().scheme(), "https");
        assert!(check_scheme(&Url::parse("http://x/").unwrap(), false).is_err());
        assert!(check_scheme(&Url::parse("ftp://x/").unwrap(), true).is_err());
        let mirror = Url::parse("http://m:8080").unwrap();
        assert_eq!(
            mirror_url(&mirror, &name).unwrap().as_str(),
            "http://m:8080/v2/ns/m/"
        );
    }
}
