//! `GET /metrics`, and the middleware that counts every HTTP request by route template, method
//! and status, and times it to the end of its response body.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{Format, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
use crate::state::AppState;

/// The route label of a request no route matched.
const UNMATCHED: &str = "other";

/// Every metric, in `OpenMetrics` text when the scraper asks for it (Prometheus does), else in
/// Prometheus' classic text format. Reads counters and the scheduler's table; never waits for
/// a model.
pub async fn scrape(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let format = if accepts_openmetrics(&headers) {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    };
    let content_type = match format {
        Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        state.metrics.encode(format),
    )
        .into_response()
}

fn accepts_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| {
            media
                .trim()
                .to_ascii_lowercase()
                .starts_with("application/openmetrics-text")
        })
}

/// Counts the request once its response is ready, and times it until its body ends (or the
/// client goes away): for a stream, that is the whole generation.
pub async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |path| path.as_str().to_owned());
    let method = method_label(request.method());
    let response = next.run(request).await;
    let duration = state
        .metrics
        .http_response(&route, method, response.status().as_u16());
    response.map(|body| {
        Body::new(Timed {
            body,
            started,
            duration: Some(duration),
        })
    })
}

/// The method as a label: the standard ones, every other `OTHER`, so that a client cannot
/// make up label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// A response body that observes its request's duration when it ends or is dropped.
struct Timed {
    body: Body,
    started: Instant,
    duration: Option<Histogram>,
}

impl Timed {
    fn observe(&mut self) {
        if let Some(duration) = self.duration.take() {
            duration.observe(self.started.elapsed().as_secs_f64());
        }
    }
}

impl HttpBody for Timed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        // Taken as the last frame leaves, before the client can have read it.
        if matches!(polled, Poll::Ready(None)) || self.body.is_end_stream() {
            self.observe();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        self.observe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked() {
        let with = |accept: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, accept.parse().unwrap());
            accepts_openmetrics(&headers)
        };
        // What Prometheus sends.
        assert!(with(
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
             text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        ));
        assert!(!with("text/plain;version=0.0.4"));
        assert!(!with("*/*"));
        assert!(!accepts_openmetrics(&HeaderMap::new()));
    }

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }
}
