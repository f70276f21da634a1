//! Answers tonic gives before (or instead of) a method, put right: a request whose bytes
//! are not the method's message (a wrong wire type, invalid UTF-8 in a string, a
//! truncated frame) is the caller's fault, INVALID_ARGUMENT, not INTERNAL; a call whose
//! `grpc-timeout` runs out is DEADLINE_EXCEEDED (tonic's own timer, which fires a little
//! later, would say CANCELLED "Timeout expired"); a request above `--max-request-bytes`
//! is RESOURCE_EXHAUSTED, as gRPC's convention has it (tonic says OUT_OF_RANGE). All are
//! counted in
//! `query_requests_total` like any answer (the method never finished them).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tonic::Code;

use crate::metrics::Metrics;

/// The layer, for tonic's `Server::layer`.
#[derive(Debug, Clone)]
pub struct FixStatus {
    metrics: Metrics,
}

impl FixStatus {
    /// Counts what it rewrites into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for FixStatus {
    type Service = Fixed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fixed { inner, metrics: self.metrics.clone() }
    }
}

/// A service whose early statuses are put right.
#[derive(Debug, Clone)]
pub struct Fixed<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B, R> tower::Service<Request<B>> for Fixed<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    R: Default + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // A Uri clone shares its bytes: the method's name is read only if counted.
        let uri = request.uri().clone();
        let metrics = self.metrics.clone();
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::service::grpc_timeout);
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = match deadline {
                // Before tonic's timer (started earlier, for the whole deadline).
                Some(d) => match tokio::time::timeout(d.mul_f64(0.9), answer).await {
                    Ok(answered) => answered?,
                    Err(_) => {
                        count(&metrics, &uri, Code::DeadlineExceeded);
                        return Ok(tonic::Status::deadline_exceeded(
                            "the call's deadline (grpc-timeout) passed before the answer was ready",
                        )
                        .into_http());
                    }
                },
                None => answer.await?,
            };
            if let Some(code) = fix(response.headers_mut()) {
                count(&metrics, &uri, code);
            }
            Ok(response)
        })
    }
}

/// Counts an answer given here as `code`, for the HolderService method `uri` names (its
/// caller unknown: "-").
fn count(metrics: &Metrics, uri: &http::Uri, code: Code) {
    let Some(method) = uri.path().strip_prefix("/holders.v1.HolderService/") else { return };
    let method: String = method.chars().filter(char::is_ascii_alphanumeric).take(40).collect();
    metrics.requests.with_label_values(&[&method, &format!("{code:?}"), "-"]).inc();
}

/// Rewrites a trailers-only answer's status when it is one of tonic's early ones; the
/// new code if it did.
fn fix(headers: &mut http::HeaderMap) -> Option<Code> {
    let status = headers.get("grpc-status")?.to_str().ok()?;
    let message = headers.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or("");
    let (code, text) = match status {
        "13" if ["failed%20to%20decode", "Unexpected%20EOF", "protocol%20error"]
            .iter()
            .any(|p| message.starts_with(p)) =>
        {
            (
                Code::InvalidArgument,
                "request: not a valid message of this method (a wrong wire type, invalid UTF-8, or cut short); build it from proto/holders/v1/holders.proto",
            )
        }
        "11" if message.starts_with("Error,%20decoded%20message%20length%20too%20large") => (
            Code::ResourceExhausted,
            "request: larger than this server accepts (--max-request-bytes); send fewer addresses per request",
        ),
        _ => return None,
    };
    headers.insert("grpc-status", HeaderValue::from(code as i32));
    headers.insert("grpc-message", HeaderValue::from_str(&text.replace(' ', "%20")).ok()?);
    Some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_failures_are_put_right_and_nothing_else() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("13"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("failed%20to%20decode%20Protobuf%20message"),
        );
        assert_eq!(fix(&mut h), Some(Code::InvalidArgument));
        assert_eq!(h["grpc-status"], "3");
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("13"));
        h.insert("grpc-message", HeaderValue::from_static("internal%20error"));
        assert_eq!(fix(&mut h), None, "our own INTERNAL stays");
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("11"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("Error,%20decoded%20message%20length%20too%20large:%20found"),
        );
        assert_eq!(fix(&mut h), Some(Code::ResourceExhausted));
    }
}
