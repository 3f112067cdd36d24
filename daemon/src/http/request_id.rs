//! Request ids: every request gets one — the client's `X-Request-Id` when it is short printable
//! ASCII, else a new one — sent back in `X-Request-Id`, and carried by a `request` span so that
//! every log line emitted while handling it, streaming its body included, names it.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// The header that carries the id both ways.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming id kept; longer ones are replaced.
pub const MAX_LENGTH: usize = 64;

/// Gives the request its id, handles it inside its span, and returns the id in the response.
pub async fn assign(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|value| sane(value.as_bytes()))
        .unwrap_or_else(generate);
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %request.method(),
        path = request.uri().path(),
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    response.headers_mut().insert(
        X_REQUEST_ID.clone(),
        HeaderValue::from_str(&id).expect("a request id is visible ASCII"),
    );
    response.map(|body| Body::new(InSpan { body, span }))
}

/// `value` as an id if it is 1 to [`MAX_LENGTH`] visible ASCII characters (no spaces, no
/// control characters), so that it cannot forge or break log lines.
fn sane(value: &[u8]) -> Option<String> {
    let fits = (1..=MAX_LENGTH).contains(&value.len()) && value.iter().all(u8::is_ascii_graphic);
    fits.then(|| String::from_utf8_lossy(value).into_owned())
}

/// A new id: 16 random hex digits.
fn generate() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A response body polled inside its request's span: a stream's work — the generation behind
/// it — logs under the request's id too.
struct InSpan {
    body: Body,
    span: tracing::Span,
}

impl HttpBody for InSpan {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_printable_ids_are_kept() {
        assert_eq!(sane(b"abc-123_XYZ.9").as_deref(), Some("abc-123_XYZ.9"));
        assert_eq!(
            sane(&[b'a'; MAX_LENGTH]).map(|id| id.len()),
            Some(MAX_LENGTH)
        );
    }

    #[test]
    fn other_ids_are_replaced() {
        assert_eq!(sane(b""), None);
        assert_eq!(sane(&[b'a'; MAX_LENGTH + 1]), None);
        assert_eq!(sane(b"two words"), None);
        assert_eq!(sane(b"line\nbreak"), None);
        assert_eq!(sane("caf\u{e9}".as_bytes()), None);
    }

    #[test]
    fn new_ids_are_sane_and_differ() {
        let (a, b) = (generate(), generate());
        assert_eq!(sane(a.as_bytes()).as_deref(), Some(a.as_str()));
        assert_ne!(a, b);
    }
}
