//! An HTTP transport that reads at most a set number of bytes of an answer: an
//! `eth_getLogs` span that turns out far denser than the ones before it (a quiet stretch
//! grew the span, then the logs begin) is refused as too large before its body is held,
//! instead of being parsed whole. A node that answers any size (a self-hosted geth,
//! Anvil) would otherwise hand back hundreds of thousands of logs in one answer, held
//! three times over (the body, its JSON, the logs) while it is decoded.
//!
//! The refusal is a provider's "too large" to the fetch, with the answer's size: the
//! span is narrowed in proportion, to about half the cap. A span of one block is never sent through here
//! ([`super::Rpc::transfer_logs`]): it cannot be narrowed, so it is read whatever its size.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task;
use std::time::Duration;

use alloy_json_rpc::{RequestPacket, ResponsePacket};
use alloy_transport::{TransportError, TransportErrorKind, TransportFut, TransportResult};

use super::error::AnswerTooLarge;

/// The HTTP transport of one node, with the shared cap on an answer's bytes.
#[derive(Debug, Clone)]
pub(super) struct CappedHttp {
    pub client: reqwest::Client,
    pub url: reqwest::Url,
    /// Bytes an answer may have; shared by every node of an [`super::Rpc`].
    pub cap: Arc<AtomicUsize>,
}

impl CappedHttp {
    async fn send(self, req: RequestPacket) -> TransportResult<ResponsePacket> {
        let mut resp = self
            .client
            .post(self.url)
            .json(&req)
            .headers(req.headers())
            .send()
            .await
            .map_err(TransportErrorKind::custom)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs);
        let cap = self.cap.load(Ordering::Relaxed);
        let announced = resp.content_length().unwrap_or(0);
        if status.is_success() && announced > cap as u64 {
            return Err(too_large(announced, cap));
        }
        let mut body = Vec::with_capacity(announced.min(cap as u64) as usize);
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if status.is_success() && body.len() + chunk.len() > cap {
                        return Err(too_large((body.len() + chunk.len()) as u64, cap));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if !status.is_success() => {
                    return Err(TransportErrorKind::http_error_with_retry_after(
                        status.as_u16(),
                        format!("<failed to read response body: {e}>"),
                        retry_after,
                    ));
                }
                Err(e) => return Err(TransportErrorKind::custom(e)),
            }
        }
        if !status.is_success() {
            // A JSON-RPC error object in an error status is still the node's answer.
            if let Ok(answer) = serde_json::from_slice::<ResponsePacket>(&body)
                && answer.is_error()
            {
                return Ok(answer);
            }
            return Err(TransportErrorKind::http_error_with_retry_after(
                status.as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
                retry_after,
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|e| TransportError::deser_err(e, String::from_utf8_lossy(&body)))
    }
}

/// The refusal of an answer over `cap` bytes (`size` of them, or more).
fn too_large(size: u64, cap: usize) -> TransportError {
    TransportErrorKind::custom(AnswerTooLarge { bytes: size, cap: cap as u64 })
}

impl tower::Service<RequestPacket> for CappedHttp {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _cx: &mut task::Context<'_>) -> task::Poll<Result<(), Self::Error>> {
        task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RequestPacket) -> Self::Future {
        Box::pin(self.clone().send(req))
    }
}
